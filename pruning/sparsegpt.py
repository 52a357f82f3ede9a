"""SparseGPT (Frantar & Alistarh, 2023): one-shot pruning by approximate optimal brain
surgeon updates, column by column, with a calibration Hessian.

Symbols follow the paper's Algorithm 1:
    H = 2 X Xᵀ / n          layer-input Hessian over n calibration tokens (X: [in, n])
    λ = percdamp · mean(diag H)   dampening added to the diagonal
    H⁻¹ = (Cholesky(H⁻¹))ᵀ  upper Cholesky factor of the inverse; row j holds the
                            OBS update for column j given columns < j are fixed
    B                       lazy-update column block (a multiple of M), E its errors
    M                       the kept-weight mask (True = kept; the paper's M marks pruned)

Pruning scores are w² / [H⁻¹]_jj², chosen per block of B columns (adaptive mask
selection) for unstructured sparsity and per group of M columns for N:M.
"""

from __future__ import annotations

import math

import torch

from .errors import PruningError
from .masks import NM, Pattern, nm_mask, unstructured_mask


def accumulate_hessian(H: torch.Tensor, X: torch.Tensor, n: int) -> tuple[torch.Tensor, int]:
    """Add the tokens ``X`` ([..., in]) to the running H = 2 X Xᵀ / n; returns (H, n)."""
    X = X.reshape(-1, X.shape[-1]).to(H.dtype)
    k = X.shape[0]
    H.mul_(n / (n + k))
    n += k
    X = math.sqrt(2.0 / n) * X
    H.addmm_(X.t(), X)
    return H, n


def inverse_hessian_factor(H: torch.Tensor, percdamp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + λI)⁻¹, λ = percdamp · mean(diag H)."""
    H = H.clone()
    idx = torch.arange(H.shape[0], device=H.device)
    H[idx, idx] += percdamp * torch.mean(torch.diag(H))
    try:
        L = torch.linalg.cholesky(H)
        Hinv = torch.cholesky_inverse(L)
        return torch.linalg.cholesky(Hinv, upper=True)
    except torch.linalg.LinAlgError as err:
        raise PruningError(
            f"Hessian is not positive definite after dampening {percdamp:g}: "
            "use more calibration samples or a larger dampening"
        ) from err


def sparsify_weight(
    W: torch.Tensor,
    H: torch.Tensor,
    pattern: Pattern,
    blocksize: int = 128,
    percdamp: float = 0.01,
    keep: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune ``W`` ([out, in]) to ``pattern`` with OBS error feedback. Returns (W', mask).

    ``blocksize`` is rounded up to a multiple of M for N:M patterns so that no group
    straddles two blocks. Neither ``W`` nor ``H`` is modified.

    ``keep`` (bool, like W): positions that are never pruned (outliers). For N:M they do
    not count toward the N: the N are chosen among the other positions of each group
    (all of them when fewer than N remain). For an unstructured pattern they take the
    place of the lowest scores in the pruning budget, as zeroed outliers did before.
    They are kept weights like any other, so the OBS error feedback updates them too
    (an outlier's final value is not its dense value); the returned mask includes them.
    """
    dtype = W.dtype
    W = W.detach().to(torch.float32).clone()
    H = H.detach().to(torch.float32).clone()
    rows, cols = W.shape
    if H.shape != (cols, cols):
        raise PruningError(f"Hessian shape {tuple(H.shape)} does not match weight width {cols}")
    if isinstance(pattern, NM):
        if cols % pattern.m:
            raise PruningError(f"input width {cols} is not divisible by M={pattern.m}")
        blocksize = math.ceil(blocksize / pattern.m) * pattern.m

    if keep is not None:
        if keep.shape != W.shape:
            raise PruningError(f"keep mask {tuple(keep.shape)} does not match W {(rows, cols)}")
        keep = keep.to(device=W.device, dtype=torch.bool)
    dead = torch.diag(H) == 0  # inputs never active: weight is irrelevant, prune it
    H[dead, dead] = 1.0
    if keep is None:
        W[:, dead] = 0.0
    else:  # a kept weight on a dead input stays as it is (it does not matter)
        W[:, dead] = torch.where(keep[:, dead], W[:, dead], torch.zeros_like(W[:, dead]))
    Hinv = inverse_hessian_factor(H, percdamp)

    M = torch.ones_like(W, dtype=torch.bool)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        E1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        d = torch.diag(Hinv1)

        K1 = None if keep is None else keep[:, i1:i2]
        if isinstance(pattern, NM):
            M1 = torch.ones_like(W1, dtype=torch.bool)
        else:  # adaptive mask selection over the whole block, with OBS scores
            score = W1**2 / d.reshape(1, -1) ** 2
            if K1 is not None:
                score = torch.where(K1, torch.full_like(score, -math.inf), score)
            M1 = unstructured_mask(score, pattern.sparsity, pattern.scope)
            if K1 is not None:
                M1 |= K1

        for i in range(i2 - i1):
            if isinstance(pattern, NM) and i % pattern.m == 0:
                g = slice(i, i + pattern.m)
                score = W1[:, g] ** 2 / d[g].reshape(1, -1) ** 2
                if K1 is None:
                    M1[:, g] = nm_mask(score, pattern.n, pattern.m)
                else:  # N among the other positions: kept ones score -inf, then join
                    score = torch.where(K1[:, g], torch.full_like(score, -math.inf), score)
                    M1[:, g] = nm_mask(score, pattern.n, pattern.m) | K1[:, g]
            w = W1[:, i]
            q = torch.where(M1[:, i], w, torch.zeros_like(w))  # pruned -> +0.0, not -0.0
            Q1[:, i] = q
            err = (w - q) / Hinv1[i, i]
            W1[:, i:] -= err.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            E1[:, i] = err

        W[:, i1:i2] = Q1
        M[:, i1:i2] = M1
        W[:, i2:] -= E1 @ Hinv[i1:i2, i2:]

    return W.to(dtype), M
