"""Salient "outlier" weights kept at full value outside the N:M pattern (Maximov et al.,
2026, arXiv 2507.03052).

Symbols:
    K       outliers per block of B = 256 consecutive input columns of a row (K:256)
    L       length of one block: B, or the short tail block of a row whose width is not
            a multiple of B; it holds k(L) = min(L, ceil(K·L/B)) outlier slots
            (spec/format.md section 7.1, ``nmlab.formats.OutlierPattern.k_for``)
    Mo      the outlier mask (True = outlier, kept at full value)
    M       the N:M kept-weight mask of the remainder W ⊙ ¬Mo

Outliers are the highest-scoring weights of each block (structured) or the same total
count chosen freely per row or over the layer (unstructured). Ties go to the lower
column index (lower row-major index for a layer), so every choice is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from .errors import PruningError

OUTLIER_BLOCK = 256

PruneFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def block_lengths(cols: int, block: int = OUTLIER_BLOCK) -> list[int]:
    """Lengths of the blocks of one row: full blocks of ``block``, then a short tail."""
    full, tail = divmod(cols, block)
    return [block] * full + ([tail] if tail else [])


def slots_for(length: int, k: int, block: int = OUTLIER_BLOCK) -> int:
    """Outlier slots of a block of ``length`` columns: k(L) = min(L, ceil(K·L/B))."""
    return min(length, -(-k * length // block))


def outliers_per_row(cols: int, k: int, block: int = OUTLIER_BLOCK) -> int:
    """Total outlier slots of one row of width ``cols``: Σ_blocks k(L)."""
    return sum(slots_for(length, k, block) for length in block_lengths(cols, block))


def _check(score: torch.Tensor, k: int, block: int) -> None:
    if score.dim() != 2:
        raise PruningError(f"score: expected a 2-D [out, in] tensor, got {tuple(score.shape)}")
    if k < 0 or block < 1:
        raise PruningError(f"outliers {k}:{block}: need K >= 0 and a positive block")
    if not torch.isfinite(score).all():
        raise PruningError("score contains NaN or Inf")


def _top_along_rows(score: torch.Tensor, count: int) -> torch.Tensor:
    """Bool mask of the ``count`` highest scores of each row; ties -> lower column."""
    mask = torch.zeros_like(score, dtype=torch.bool)
    if count:
        order = torch.sort(score, dim=1, descending=True, stable=True).indices
        mask.scatter_(1, order[:, :count], True)
    return mask


def structured_outlier_mask(
    score: torch.Tensor, k: int, block: int = OUTLIER_BLOCK
) -> torch.Tensor:
    """Mo: in each block of ``block`` columns of each row, the top-k(L) scores (K:256).

    k(L) = min(L, ceil(K·L/B)) for a block of L columns (the tail rule of the codec).
    """
    _check(score, k, block)
    mask = torch.zeros_like(score, dtype=torch.bool)
    start = 0
    for length in block_lengths(score.shape[1], block):
        cols = slice(start, start + length)
        mask[:, cols] = _top_along_rows(score[:, cols], slots_for(length, k, block))
        start += length
    return mask


def unstructured_outlier_mask(
    score: torch.Tensor, count: int, scope: Literal["row", "layer"] = "row"
) -> torch.Tensor:
    """Mo: the ``count`` highest scores of each row (scope "row") or of the whole layer
    (scope "layer", ``count`` is then the layer total). For the same budget as K:256 use
    ``outliers_per_row(cols, K)`` per row, or ``rows * outliers_per_row(cols, K)``."""
    _check(score, 0, 1)
    if scope == "row":
        if not 0 <= count <= score.shape[1]:
            raise PruningError(f"{count} outliers per row: row width is {score.shape[1]}")
        return _top_along_rows(score, count)
    if scope == "layer":
        if not 0 <= count <= score.numel():
            raise PruningError(f"{count} outliers in a layer of {score.numel()} weights")
        return _top_along_rows(score.reshape(1, -1), count).view_as(score)
    raise PruningError(f"outlier scope {scope!r}: expected row or layer")


def prune_with_outliers(
    W: torch.Tensor,
    score: torch.Tensor | None,
    outlier_mask: torch.Tensor | int,
    prune_fn: PruneFn,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the outliers Mo at full value and prune the remainder with any method.

    W_rest = W ⊙ ¬Mo (outliers set to +0.0); (W_rest', M) = prune_fn(W_rest);
    W' = W at Mo, W_rest' at M ∧ ¬Mo, +0.0 elsewhere. ``outlier_mask`` is Mo, or an int K to
    select Mo = structured_outlier_mask(score, K). Returns (W', M ∧ ¬Mo, Mo): the main mask
    never overlaps the outliers, so W' is exactly what the codec stores as N:M + K:256.

    A method with error feedback (SparseGPT) may move weight into the zeroed outlier
    positions of W_rest'; that update is discarded here, since the outlier keeps W.
    """
    if isinstance(outlier_mask, int):
        if score is None:
            raise PruningError("outlier count K given without a score to choose outliers by")
        outlier_mask = structured_outlier_mask(score, outlier_mask)
    Mo = outlier_mask.to(device=W.device, dtype=torch.bool)
    if Mo.shape != W.shape:
        raise PruningError(f"outlier mask {tuple(Mo.shape)} does not match weight {tuple(W.shape)}")
    zero = torch.zeros_like(W)
    W_rest = torch.where(Mo, zero, W)
    W_rest_pruned, M = prune_fn(W_rest)
    M = M.to(device=W.device, dtype=torch.bool) & ~Mo
    main = torch.where(M, W_rest_pruned.to(W.dtype), zero)  # pruned -> +0.0, never -0.0
    return torch.where(Mo, W, main), M, Mo


def encoder_outlier_mask(W: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """The outliers the codec's encoder splits off when given no outlier mask
    (``formats.split.default_outlier_mask``): in each group of M consecutive columns,
    the occupied elements (bits not all zero, so -0.0 counts) beyond N, largest |w|
    first, ties to the lower column."""
    rows, cols = W.shape
    if cols % m:
        raise PruningError(f"input width {cols} is not divisible by M={m}")
    groups = W.detach().reshape(-1, m)
    occupied = (groups != 0) | torch.signbit(groups)
    excess = occupied.sum(1, keepdim=True) - n
    magnitude = groups.double().abs()
    key = torch.where(occupied, -magnitude, torch.full_like(magnitude, float("inf")))
    order = torch.sort(key, dim=1, stable=True).indices
    place = torch.empty_like(order)
    place.scatter_(1, order, torch.arange(m, device=W.device).expand_as(order).contiguous())
    return (occupied & (place < excess)).reshape(rows, cols)


def k_holding(counts: dict[int, int], block: int = OUTLIER_BLOCK) -> int:
    """Smallest K' >= 1 whose slots k(L) = min(L, ceil(K'·L/B)) hold ``counts``, the most
    outliers found in any block of each length L ({L: count}). At most B (k(L) = L)."""
    need = 1
    for length, count in counts.items():
        if count > length:
            raise PruningError(f"{count} outliers cannot fit a block of {length} columns")
        while slots_for(length, need, block) < count:
            need += 1
    return need


def encoded_outlier_k(weights: list[torch.Tensor], n: int, m: int) -> int:
    """Smallest K' of K':256 that holds, in every 256-block of every row of every weight,
    the outliers the encoder will split off (:func:`encoder_outlier_mask`)."""
    worst: dict[int, int] = {}
    for W in weights:
        mask = encoder_outlier_mask(W, n, m)
        start = 0
        for length in block_lengths(W.shape[1]):
            count = int(mask[:, start : start + length].sum(1).max()) if W.shape[0] else 0
            worst[length] = max(worst.get(length, 0), count)
            start += length
    return k_holding(worst)
