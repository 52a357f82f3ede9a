"""Pruning methods as per-layer functions for the sequential driver.

A method says which input statistics it needs and how to turn (W, statistics) into
(W', mask); the driver collects the statistics with hooks. Outliers and Variance
Correction wrap a base method here; rebalancing and fine-tuning live in the driver.
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
    sum_x: torch.Tensor | None = None  # Σ_t x_t (float64), for output-mode VC
    sum_xxT: torch.Tensor | None = None  # Σ_t x_t x_tᵀ (float64), for output-mode VC

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (self.sq_norm, self.H, self.sum_x, self.sum_xxT) if t is not None]


PruneFn = Callable[[str, torch.Tensor, LayerStats], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Method:
    name: str
    needs: Needs
    prune: PruneFn  # (layer name, W [out, in], stats) -> (W', kept mask)
    moments: bool = False  # also needs Σx and Σxxᵀ of the inputs (output-mode VC)


VC_MODES = ("none", "weight", "output")
OUTLIER_SELECTIONS = ("structured", "unstructured")


def make_method(
    name: str,
    pattern: Pattern,
    blocksize: int = 128,
    percdamp: float = 0.01,
    outliers: int | None = None,
    vc: str = "none",
    outlier_selection: str = "structured",
) -> Method:
    """The per-layer function of a named method for ``pattern``, optionally keeping
    ``outliers`` = K salient weights per 256-block at full value (K:256) and applying
    Variance Correction to the kept N:M weights afterwards (``vc="weight"``: γ from the
    weights; ``vc="output"``: γ from the output variance over the calibration tokens,
    computed from input moments). Outliers are never rescaled.

    ``outlier_selection="unstructured"`` keeps the same count per row,
    ``outliers_per_row(cols, K)``, chosen anywhere in the row by the same saliency.

    Outlier saliency follows the method's statistics: |W| for magnitude, the Wanda
    score |W_ij|·‖X_j‖ for Wanda, and |W_ij|·sqrt(H_jj) for SparseGPT (the same
    ranking, since H = 2XXᵀ/n gives H_jj ∝ ‖X_j‖²). SparseGPT prunes around the
    outliers (``sparsify_weight(keep=Mo)``), so its error feedback reaches them too."""
    base = _base_method(name, pattern, blocksize, percdamp)
    if vc not in VC_MODES:
        raise PruningError(f"unknown variance correction {vc!r}: expected one of {VC_MODES}")
    if outlier_selection not in OUTLIER_SELECTIONS:
        raise PruningError(
            f"unknown outlier selection {outlier_selection!r}: expected one of {OUTLIER_SELECTIONS}"
        )
    if outlier_selection != "structured" and outliers is None:
        raise PruningError(f"outlier selection {outlier_selection} needs outliers, e.g. 16:256")
    if outliers is None and vc == "none":
        return base
    if outliers is not None and not 1 <= outliers <= 64:
        raise PruningError(f"outliers K:256 needs 1 <= K <= 64, got {outliers}")

    def extended(layer: str, W: torch.Tensor, s: LayerStats) -> tuple[torch.Tensor, torch.Tensor]:
        from .outliers import (
            outliers_per_row,
            prune_with_outliers,
            structured_outlier_mask,
            unstructured_outlier_mask,
        )
        from .variance import variance_correction_moments, variance_correction_weights

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
            if outlier_selection == "structured":
                Mo = structured_outlier_mask(score, outliers)
            else:
                Mo = unstructured_outlier_mask(score, outliers_per_row(W.shape[1], outliers))
            if name == "sparsegpt":
                assert s.H is not None
                W_new, kept = sparsify_weight(W, s.H, pattern, blocksize, percdamp, keep=Mo)
                W_new = torch.where(kept, W_new, torch.zeros_like(W_new))  # +0.0 when pruned
                main, outlier_mask = kept & ~Mo, Mo
            else:
                W_new, main, outlier_mask = prune_with_outliers(W, score, Mo, prune_rest)
        kept = main | outlier_mask
        if vc == "weight":  # gamma from the whole rows, applied to the N:M weights only
            corrected = variance_correction_weights(W, W_new, kept)
            W_new = torch.where(main, corrected, W_new)
        elif vc == "output":  # likewise: Var over tokens of the whole rows' outputs
            assert s.sum_x is not None and s.sum_xxT is not None
            corrected = variance_correction_moments(W, W_new, s.n, s.sum_x, s.sum_xxT, kept)
            W_new = torch.where(main, corrected, W_new)
        return W_new, kept

    return Method(base.name, base.needs, extended, moments=vc == "output")


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
