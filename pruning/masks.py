"""Sparsity patterns and mask selection from a score.

A mask is a bool tensor shaped like the weight (``[out, in]``, ``nn.Linear`` layout);
True marks a *kept* weight. N:M groups are M consecutive input columns of one row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import torch

from .errors import PruningError


@dataclass(frozen=True)
class NM:
    """Keep N of every M consecutive weights of a row (N < M)."""

    n: int
    m: int

    def __post_init__(self) -> None:
        if self.m < 2 or not 1 <= self.n < self.m:
            raise PruningError(f"pattern {self.n}:{self.m}: need 1 <= N < M (and M >= 2)")

    @property
    def sparsity(self) -> float:
        return 1.0 - self.n / self.m

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"


@dataclass(frozen=True)
class Unstructured:
    """Prune a fraction ``sparsity`` of the weights, per output row or over the layer."""

    sparsity: float
    scope: Literal["row", "layer"] = "row"

    def __post_init__(self) -> None:
        if not 0.0 <= self.sparsity < 1.0:
            raise PruningError(f"sparsity {self.sparsity:g}: must be in [0, 1)")
        if self.scope not in ("row", "layer"):
            raise PruningError(f"unstructured scope {self.scope!r}: expected row or layer")

    def __str__(self) -> str:
        pct = f"{self.sparsity * 100:g}%"
        return pct if self.scope == "row" else f"{pct}-layer"


Pattern = NM | Unstructured


def parse_pattern(text: str) -> Pattern:
    """``"8:16"`` -> NM(8, 16); ``"50%"`` -> per-row; ``"50%-layer"`` -> per-layer."""
    s = str(text).strip().lower()
    nm = re.fullmatch(r"(\d+)\s*:\s*(\d+)", s)
    if nm:
        return NM(int(nm.group(1)), int(nm.group(2)))
    un = re.fullmatch(r"(\d+(?:\.\d+)?)\s*%(?:[-_/](row|layer))?", s)
    if un:
        return Unstructured(float(un.group(1)) / 100.0, un.group(2) or "row")  # type: ignore[arg-type]
    raise PruningError(
        f"pattern {text!r}: expected N:M (e.g. 8:16) or a percentage (50%, 50%-layer)"
    )


def check_weight(weight: torch.Tensor, pattern: Pattern, name: str = "weight") -> None:
    """Raise PruningError for a weight this pattern cannot prune (shape, NaN/Inf)."""
    if weight.dim() != 2:
        raise PruningError(
            f"{name}: expected a 2-D [out, in] weight, got shape {tuple(weight.shape)}"
        )
    if isinstance(pattern, NM) and weight.shape[1] % pattern.m:
        raise PruningError(
            f"{name}: input width {weight.shape[1]} is not divisible by M={pattern.m} "
            f"(pattern {pattern})"
        )
    if not torch.isfinite(weight).all():
        raise PruningError(f"{name}: weight contains NaN or Inf")


def nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the N highest-scoring of each group of M consecutive columns of a row."""
    rows, cols = score.shape
    groups = score.reshape(rows, cols // m, m)
    keep = torch.topk(groups, n, dim=-1, largest=True, sorted=False).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True)
    return mask.reshape(rows, cols)


def unstructured_mask(score: torch.Tensor, sparsity: float, scope: str = "row") -> torch.Tensor:
    """Prune the ``floor(sparsity * count)`` lowest scores of each row, or of the layer."""
    if scope == "row":
        k = int(score.shape[1] * sparsity)
        mask = torch.ones_like(score, dtype=torch.bool)
        if k:
            drop = torch.topk(score, k, dim=1, largest=False, sorted=False).indices
            mask.scatter_(1, drop, False)
        return mask
    k = int(score.numel() * sparsity)
    mask = torch.ones(score.numel(), dtype=torch.bool, device=score.device)
    if k:
        drop = torch.topk(score.flatten(), k, largest=False, sorted=False).indices
        mask[drop] = False
    return mask.view_as(score)


def select_mask(score: torch.Tensor, pattern: Pattern) -> torch.Tensor:
    """The kept-weight mask of ``pattern`` that keeps the highest scores."""
    if isinstance(pattern, NM):
        return nm_mask(score, pattern.n, pattern.m)
    return unstructured_mask(score, pattern.sparsity, pattern.scope)


def is_nm(mask: torch.Tensor, n: int, m: int) -> bool:
    """Every group of M consecutive columns of every row keeps exactly N."""
    rows, cols = mask.shape
    if cols % m:
        return False
    return bool((mask.reshape(rows, cols // m, m).sum(-1) == n).all())


def sparsity_of(mask: torch.Tensor) -> float:
    """Fraction of pruned (False) entries."""
    return 1.0 - mask.sum().item() / mask.numel()
