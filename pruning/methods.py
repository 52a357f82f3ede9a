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


VC_MODES = ("none", "weight")


def make_method(
    name: str,
    pattern: Pattern,
    blocksize: int = 128,
    percdamp: float = 0.01,
    outliers: int | None = None,
    vc: str = "none",
) -> Method:
    """The per-layer function of a named method for ``pattern``, optionally keeping
    ``outliers`` = K salient weights per 256-block at full value (K:256) and applying
    Variance Correction (``vc="weight"``) to the kept N:M weights afterwards.

    Outlier saliency follows the method's statistics: |W| for magnitude, the Wanda
    score |W_ij|·‖X_j‖ for Wanda, and |W_ij|·sqrt(H_jj) for SparseGPT (the same
    ranking, since H = 2XXᵀ/n gives H_jj ∝ ‖X_j‖²)."""
    base = _base_method(name, pattern, blocksize, percdamp)
    if vc not in VC_MODES:
        raise PruningError(f"unknown variance correction {vc!r}: expected one of {VC_MODES}")
    if outliers is None and vc == "none":
        return base
    if outliers is not None and not 1 <= outliers <= 64:
        raise PruningError(f"outliers K:256 needs 1 <= K <= 64, got {outliers}")

    def extended(layer: str, W: torch.Tensor, s: LayerStats) -> tuple[torch.Tensor, torch.Tensor]:
        from .outliers import prune_with_outliers
        from .variance import variance_correction_weights

        def prune_rest(W_rest: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return base.prune(layer, W_rest, s)

        if outliers is None:
            W_new, main = prune_rest(W)
            outlier_mask = torch.zeros_like(main)
        else:
            if s.sq_norm is not None:
                score = wanda_score(W, s.sq_norm.sqrt())
            elif s.H is not None:
                score = wanda_score(W, s.H.diagonal().clamp(min=0).sqrt())
            else:
                score = W.abs()
            W_new, main, outlier_mask = prune_with_outliers(W, score, outliers, prune_rest)
        if vc == "weight":  # gamma from the whole rows, applied to the N:M weights only
            corrected = variance_correction_weights(W, W_new, main | outlier_mask)
            W_new = torch.where(main, corrected, W_new)
        return W_new, main | outlier_mask

    return Method(base.name, base.needs, extended)


def _base_method(name: str, pattern: Pattern, blocksize: int, percdamp: float) -> Method:
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
