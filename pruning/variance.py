"""Variance Correction after pruning (Maximov et al., 2026): rescale each output row's
kept weights so that a second-order statistic of the dense layer is restored.

Symbols (W: [out, in]; M: kept mask; X: [n, in] calibration activations):
    weight mode:  γ_r = sqrt( Var(W_r) / Var(Ŵ_r ⊙ M_r) )       zeros included
    output mode:  γ_c = sqrt( Var(X W_cᵀ) / Var(X Ŵ_cᵀ) )        over the n tokens
                  Var(X w) = wᵀ Cov(X) w, Cov(X) = Σxxᵀ/n - μμᵀ, μ = Σx/n (from moments,
                  so the driver never stores activations)
    W'_r = γ_r · Ŵ_r on M_r, +0.0 elsewhere

Var is the population variance (divide by the count). Ŵ is the pruned weight (W ⊙ M, or
SparseGPT's updated one). A row whose dense or pruned variance is 0 keeps γ = 1. Since
Var(γ·v) = γ²·Var(v), weight mode makes Var(W'_r) = Var(W_r) and output mode makes
Var(X W'_cᵀ) = Var(X W_cᵀ), up to rounding. Masks never change: γ > 0.
"""

from __future__ import annotations

import torch

from .errors import PruningError


def _gamma(dense_var: torch.Tensor, pruned_var: torch.Tensor) -> torch.Tensor:
    """γ = sqrt(dense_var / pruned_var), 1 where either is 0 or the ratio is not finite."""
    ok = (dense_var > 0) & (pruned_var > 0)
    ratio = dense_var / torch.where(ok, pruned_var, torch.ones_like(pruned_var))
    gamma = torch.sqrt(ratio)
    return torch.where(ok & torch.isfinite(gamma), gamma, torch.ones_like(gamma))


def _apply(W_pruned: torch.Tensor, mask: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    scaled = (W_pruned.double() * gamma.reshape(-1, 1)).to(W_pruned.dtype)
    return torch.where(mask, scaled, torch.zeros_like(W_pruned))  # pruned -> +0.0


def _check(W_dense: torch.Tensor, W_pruned: torch.Tensor, mask: torch.Tensor | None) -> None:
    if W_dense.dim() != 2 or W_dense.shape != W_pruned.shape:
        raise PruningError(
            f"variance correction: dense {tuple(W_dense.shape)} and pruned "
            f"{tuple(W_pruned.shape)} must be the same 2-D [out, in] shape"
        )
    if mask is not None and mask.shape != W_pruned.shape:
        raise PruningError(f"mask {tuple(mask.shape)} does not match {tuple(W_pruned.shape)}")


def row_gamma_weights(
    W_dense: torch.Tensor, W_pruned: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """γ_r = sqrt(Var(W_r) / Var(Ŵ_r ⊙ M_r)) per output row, zeros included: shape [out]."""
    _check(W_dense, W_pruned, mask)
    kept = torch.where(mask, W_pruned.double(), torch.zeros((), dtype=torch.float64))
    return _gamma(W_dense.double().var(dim=1, correction=0), kept.var(dim=1, correction=0))


def variance_correction_weights(
    W_dense: torch.Tensor, W_pruned: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """W' = γ_r · Ŵ_r on the kept weights M_r (weight-statistics mode), +0.0 elsewhere."""
    mask = mask.to(dtype=torch.bool)
    return _apply(W_pruned, mask, row_gamma_weights(W_dense, W_pruned, mask))


def row_gamma_outputs(
    W_dense: torch.Tensor, W_pruned: torch.Tensor, X: torch.Tensor
) -> torch.Tensor:
    """γ_c = sqrt(Var(X W_cᵀ) / Var(X Ŵ_cᵀ)) per output channel over the tokens: [out]."""
    _check(W_dense, W_pruned, None)
    X = X.reshape(-1, X.shape[-1]).double()
    if X.shape[1] != W_dense.shape[1] or X.shape[0] < 2:
        raise PruningError(
            f"activations {tuple(X.shape)}: need at least 2 tokens of width {W_dense.shape[1]}"
        )
    dense_var = (X @ W_dense.double().T).var(dim=0, correction=0)
    pruned_var = (X @ W_pruned.double().T).var(dim=0, correction=0)
    return _gamma(dense_var, pruned_var)


def variance_correction_outputs(
    W_dense: torch.Tensor,
    W_pruned: torch.Tensor,
    X: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """W' = γ_c · Ŵ_c on the kept weights (output-statistics mode), +0.0 elsewhere.

    ``mask`` defaults to the non-zeros of Ŵ (a -0.0 counts as pruned and becomes +0.0).
    """
    mask = (W_pruned != 0) if mask is None else mask.to(dtype=torch.bool)
    _check(W_dense, W_pruned, mask)
    kept = torch.where(mask, W_pruned, torch.zeros_like(W_pruned))
    return _apply(kept, mask, row_gamma_outputs(W_dense, kept, X))


def covariance_from_moments(n: int, sum_x: torch.Tensor, sum_xxT: torch.Tensor) -> torch.Tensor:
    """Population covariance Σxxᵀ/n - μμᵀ (float64) of n tokens from their moments."""
    if n < 2:
        raise PruningError(f"variance correction needs at least 2 tokens, got {n}")
    if sum_xxT.shape != (sum_x.shape[0], sum_x.shape[0]) or sum_x.dim() != 1:
        raise PruningError(
            f"moments: Σx {tuple(sum_x.shape)} and Σxxᵀ {tuple(sum_xxT.shape)} do not match"
        )
    mu = sum_x.double() / n
    return sum_xxT.double() / n - torch.outer(mu, mu)


def row_gamma_moments(
    W_dense: torch.Tensor,
    W_pruned: torch.Tensor,
    n: int,
    sum_x: torch.Tensor,
    sum_xxT: torch.Tensor,
) -> torch.Tensor:
    """γ_c of the output mode from input moments: Var(X w) = wᵀ Cov(X) w. Shape [out].

    Equals :func:`row_gamma_outputs` on the activations those moments came from."""
    _check(W_dense, W_pruned, None)
    if sum_x.shape[0] != W_dense.shape[1]:
        raise PruningError(f"moments of width {sum_x.shape[0]}, weight width {W_dense.shape[1]}")
    cov = covariance_from_moments(n, sum_x, sum_xxT)
    Wd, Wp = W_dense.double(), W_pruned.double()
    dense_var = ((Wd @ cov) * Wd).sum(1).clamp(min=0)  # rounding may give -tiny
    pruned_var = ((Wp @ cov) * Wp).sum(1).clamp(min=0)
    return _gamma(dense_var, pruned_var)


def variance_correction_moments(
    W_dense: torch.Tensor,
    W_pruned: torch.Tensor,
    n: int,
    sum_x: torch.Tensor,
    sum_xxT: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Output mode from moments: W' = γ_c · Ŵ_c on the kept weights, +0.0 elsewhere."""
    mask = (W_pruned != 0) if mask is None else mask.to(dtype=torch.bool)
    _check(W_dense, W_pruned, mask)
    kept = torch.where(mask, W_pruned, torch.zeros_like(W_pruned))
    return _apply(kept, mask, row_gamma_moments(W_dense, kept, n, sum_x, sum_xxT))
