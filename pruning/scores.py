"""Saliency scores: higher means more important to keep."""

from __future__ import annotations

import torch

from .masks import Pattern, select_mask


def magnitude_score(W: torch.Tensor) -> torch.Tensor:
    """|W_ij|."""
    return W.abs()


def wanda_score(W: torch.Tensor, x_norm: torch.Tensor) -> torch.Tensor:
    """Wanda: |W_ij| * ||X_j||_2, where ||X_j||_2 is the norm of input feature j over all
    calibration tokens (Sun et al., 2023)."""
    return W.abs() * x_norm.reshape(1, -1).to(W.dtype)


def prune_by_score(
    W: torch.Tensor, score: torch.Tensor, pattern: Pattern
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero the weights the mask drops; no update of the kept ones. Returns (W', mask)."""
    mask = select_mask(score, pattern)
    return torch.where(mask, W, torch.zeros_like(W)), mask  # +0.0, never -0.0, when pruned
