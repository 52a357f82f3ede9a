"""SmoothQuant-style rebalancing of input channels before pruning (Xiao et al., 2023;
used for pruning by Maximov et al., 2026).

Symbols (W: [out, in], nn.Linear layout; X: [tokens, in]):
    s_j = max|X_j|^α / max|W_:,j|^(1-α)     per input channel j, α = 0.5 by default
    Ŵ = W · diag(s)                          every Linear that reads X (q/k/v, gate/up)
    X̂ = X · diag(1/s)                        absorbed by the preceding norm: g → g / s

so that X̂ Ŵᵀ = X Wᵀ and the dense block output is unchanged. The Wanda score
|W_ij|·‖X_j‖ and the SparseGPT OBS score w²/[H⁻¹]_jj² (with H = 2XᵀX/n) are invariant
under this rescale (the latter up to dampening); magnitude |W_ij| is not.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .errors import PruningError


def weight_absmax(W_list: Sequence[torch.Tensor]) -> torch.Tensor:
    """max|W_:,j| over the rows of every weight that shares the input X: shape [in]."""
    if not W_list:
        raise PruningError("weight_absmax: no weights")
    cols = {W.shape[1] for W in W_list}
    if len(cols) != 1:
        raise PruningError(f"weights sharing one input have different widths {sorted(cols)}")
    return torch.stack([W.detach().abs().amax(dim=0).float() for W in W_list]).amax(dim=0)


def smooth_scales(
    x_absmax: torch.Tensor, w_absmax: torch.Tensor, alpha: float = 0.5, eps: float = 1e-5
) -> torch.Tensor:
    """s_j = max|X_j|^α / max|W_:,j|^(1-α), clamped to [eps, 1/eps].

    A channel with max|X_j| = 0 (never active) or max|W_:,j| = 0 (no weight) carries no
    balance to restore and gets s_j = 1. The result is finite and positive (float32).
    """
    if not 0.0 <= alpha <= 1.0:
        raise PruningError(f"smoothing alpha {alpha:g}: must be in [0, 1]")
    if x_absmax.shape != w_absmax.shape or x_absmax.dim() != 1:
        raise PruningError(
            f"scales: x_absmax {tuple(x_absmax.shape)} and w_absmax {tuple(w_absmax.shape)} "
            "must be the same 1-D shape [in]"
        )
    x = x_absmax.detach().double().abs()
    w = w_absmax.detach().double().abs()
    if not (torch.isfinite(x).all() and torch.isfinite(w).all()):
        raise PruningError("scales: activation or weight maxima contain NaN or Inf")
    dead = (x == 0) | (w == 0)
    s = x.clamp(min=eps) ** alpha / w.clamp(min=eps) ** (1.0 - alpha)
    s = torch.where(dead, torch.ones_like(s), s).clamp(min=eps, max=1.0 / eps)
    return s.float()


def rebalance(W_list: Sequence[torch.Tensor], s: torch.Tensor) -> list[torch.Tensor]:
    """Ŵ = W · diag(s) for each weight (column j scaled by s_j)."""
    return [W * s.to(device=W.device, dtype=W.dtype).reshape(1, -1) for W in W_list]


def unbalance(W: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """W = Ŵ · diag(1/s): fold the scales back into a (pruned) weight when no norm can
    absorb them. Zeros stay zeros of the same sign, so a mask is unchanged."""
    return W / s.to(device=W.device, dtype=W.dtype).reshape(1, -1)


def fold_into_norm(norm_weight: torch.Tensor, s: torch.Tensor, offset: float = 0.0) -> torch.Tensor:
    """g / s: the preceding RMSNorm/LayerNorm weight absorbs diag(1/s), so X̂ = X·diag(1/s).

    ``offset`` is for norms that multiply by (offset + g) rather than g, such as Gemma's
    RMSNorm (offset 1): then (offset + g') = (offset + g) / s, i.e. g' = (offset + g)/s - offset.
    """
    if norm_weight.shape != s.shape:
        raise PruningError(
            f"norm weight {tuple(norm_weight.shape)} does not match scales {tuple(s.shape)}"
        )
    s = s.to(device=norm_weight.device, dtype=torch.float64)
    folded = (norm_weight.double() + offset) / s - offset
    return folded.to(norm_weight.dtype)
