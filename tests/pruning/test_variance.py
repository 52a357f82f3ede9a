"""Variance Correction: weight mode restores each row's variance, output mode restores
each output channel's variance on the calibration inputs; masks and +0.0 are kept."""

from __future__ import annotations

import pytest
import torch

from nmlab.pruning.errors import PruningError
from nmlab.pruning.masks import NM, Unstructured
from nmlab.pruning.scores import magnitude_score, prune_by_score
from nmlab.pruning.sparsegpt import accumulate_hessian, sparsify_weight
from nmlab.pruning.variance import (
    row_gamma_outputs,
    row_gamma_weights,
    variance_correction_outputs,
    variance_correction_weights,
)


def layer(rows: int = 16, cols: int = 64, tokens: int = 512, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(rows, cols, generator=g) + 0.3  # a non-zero row mean as well
    X = torch.randn(tokens, cols, generator=g) + 0.5
    return W, X


def row_var(W: torch.Tensor) -> torch.Tensor:
    return W.double().var(dim=1, correction=0)


@pytest.mark.parametrize("pattern", [NM(2, 4), NM(8, 16), Unstructured(0.5)])
def test_weight_mode_restores_row_variance(pattern) -> None:
    W, _ = layer()
    Wp, M = prune_by_score(W, magnitude_score(W), pattern)
    assert not torch.allclose(row_var(Wp), row_var(W), rtol=1e-2)  # pruning changed it
    Wc = variance_correction_weights(W, Wp, M)
    torch.testing.assert_close(row_var(Wc), row_var(W), rtol=1e-5, atol=1e-7)
    assert torch.equal(Wc != 0, M)  # mask unchanged
    assert not torch.signbit(Wc[~M]).any()  # pruned stay +0.0
    # γ is the formula, per row, with zeros included and population variance
    gamma = torch.sqrt(row_var(W) / row_var(torch.where(M, W, 0.0)))
    torch.testing.assert_close(row_gamma_weights(W, Wp, M), gamma)
    torch.testing.assert_close(Wc[M], (Wp.double() * gamma[:, None])[M].float())
    assert (gamma > 0).all() and torch.isfinite(gamma).all()


def test_weight_mode_after_sparsegpt_uses_updated_weights() -> None:
    W, X = layer(rows=8, cols=32, tokens=1024)
    H, _ = accumulate_hessian(torch.zeros(32, 32), X, 0)
    Wp, M = sparsify_weight(W, H, NM(2, 4))
    Wc = variance_correction_weights(W, Wp, M)
    torch.testing.assert_close(row_var(Wc), row_var(W), rtol=1e-5, atol=1e-7)
    assert torch.equal(Wc != 0, M & (Wp != 0))


def test_weight_mode_guards_and_zeros() -> None:
    W = torch.tensor([[1.0, 1.0, 1.0, 1.0], [3.0, 0.0, 0.0, 0.0], [1.0, -2.0, 3.0, -4.0]])
    M = torch.tensor([[True, True, False, False], [False, True, True, False], [True] * 4])
    # a -0.0 left in a pruned slot, and one in a kept slot
    Wp = torch.where(M, W, torch.tensor(-0.0))
    Wc = variance_correction_weights(W, Wp, M)
    g = row_gamma_weights(W, Wp, M)
    assert g[1] == 1.0  # pruned row is all zero: Var = 0, γ = 1, no division by zero
    assert g[2] == 1.0 and torch.equal(Wc[2], W[2])  # nothing pruned: unchanged
    assert torch.isfinite(Wc).all()
    assert not torch.signbit(Wc[~M]).any()  # every pruned slot is +0.0
    # constant dense row: Var(W_0) = 0 -> γ = 1 as well
    assert g[0] == 1.0 and torch.equal(Wc[0], torch.tensor([1.0, 1.0, 0.0, 0.0]))
    with pytest.raises(PruningError):
        variance_correction_weights(W, Wp[:, :2], M)


@pytest.mark.parametrize("pattern", [NM(2, 4), NM(8, 16)])
def test_output_mode_restores_output_variance(pattern) -> None:
    W, X = layer()
    Wp, M = prune_by_score(W, magnitude_score(W), pattern)
    out_var = (X.double() @ W.double().T).var(0, correction=0)
    assert not torch.allclose((X.double() @ Wp.double().T).var(0, correction=0), out_var, rtol=1e-2)
    Wc = variance_correction_outputs(W, Wp, X)
    new_var = (X.double() @ Wc.double().T).var(0, correction=0)
    torch.testing.assert_close(new_var, out_var, rtol=1e-5, atol=1e-7)
    assert torch.equal(Wc != 0, M)
    assert not torch.signbit(Wc[~M]).any()
    gamma = torch.sqrt(out_var / (X.double() @ Wp.double().T).var(0, correction=0))
    torch.testing.assert_close(row_gamma_outputs(W, Wp, X), gamma)
    # it differs from the weight mode: another statistic, another γ
    assert not torch.allclose(gamma, row_gamma_weights(W, Wp, M), rtol=1e-3)


def test_output_mode_mask_and_negative_zero() -> None:
    W, X = layer(rows=4, cols=16, tokens=64, seed=3)
    Wp, M = prune_by_score(W, magnitude_score(W), NM(2, 4))
    Wneg = torch.where(M, Wp, torch.tensor(-0.0))
    Wc = variance_correction_outputs(W, Wneg, X)  # -0.0 counts as pruned
    assert torch.equal(Wc != 0, M) and not torch.signbit(Wc[~M]).any()
    # an explicit mask drops what lies outside it, and γ is computed on the kept part
    M2 = M.clone()
    M2[0, :] = False
    Wc2 = variance_correction_outputs(W, Wp, X, mask=M2)
    assert (Wc2[0] == 0).all() and not torch.signbit(Wc2[0]).any()
    torch.testing.assert_close(Wc2[1:], Wc[1:])
    with pytest.raises(PruningError):
        variance_correction_outputs(W, Wp, X[:, :8])
    with pytest.raises(PruningError):
        variance_correction_outputs(W, Wp, X[:1])
