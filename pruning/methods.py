"""Pruning methods as per-layer functions for the sequential driver.

A method says which input statistics it needs and how to turn (W, statistics) into
(W', mask); the driver collects the statistics with hooks. Later methods (outliers,
rebalancing, variance correction) plug in the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from .errors import PruningError
from .masks import Pattern
from .scores import magnitude_score, prune_by_score, wanda_score
from .sparsegpt import sparsify_weight

Needs = Literal["none", "norms", "hessian"]
METHODS = ("magnitude", "wanda", "sparsegpt")


@dataclass
class LayerStats:
    """Statistics of one linear layer's calibration inputs X ([n tokens, in])."""

    n: int = 0
    sq_norm: torch.Tensor | None = None  # Σ_t x_tj², the squared column norms ‖X_j‖²
    H: torch.Tensor | None = None  # 2 X Xᵀ / n

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (self.sq_norm, self.H) if t is not None]


PruneFn = Callable[[str, torch.Tensor, LayerStats], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Method:
    name: str
    needs: Needs
    prune: PruneFn  # (layer name, W [out, in], stats) -> (W', kept mask)


def make_method(
    name: str, pattern: Pattern, blocksize: int = 128, percdamp: float = 0.01
) -> Method:
    """The per-layer function of a named method for ``pattern``."""
    if name == "magnitude":
        return Method(
            name, "none", lambda _n, W, _s: prune_by_score(W, magnitude_score(W), pattern)
        )
    if name == "wanda":

        def wanda(_name: str, W: torch.Tensor, s: LayerStats) -> tuple[torch.Tensor, torch.Tensor]:
            assert s.sq_norm is not None
            return prune_by_score(W, wanda_score(W, s.sq_norm.sqrt()), pattern)

        return Method(name, "norms", wanda)
    if name == "sparsegpt":

        def sparsegpt(
            _name: str, W: torch.Tensor, s: LayerStats
        ) -> tuple[torch.Tensor, torch.Tensor]:
            assert s.H is not None
            return sparsify_weight(W, s.H, pattern, blocksize=blocksize, percdamp=percdamp)

        return Method(name, "hessian", sparsegpt)
    raise PruningError(f"unknown method {name!r}: expected one of {', '.join(METHODS)}")
