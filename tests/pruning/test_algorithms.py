"""Magnitude, Wanda and SparseGPT on synthetic layers, and SparseGPT against the
published reference implementation on the same layer and Hessian."""

from __future__ import annotations

import pytest
import torch

from nmlab.pruning.errors import PruningError
from nmlab.pruning.masks import NM, Unstructured, is_nm, select_mask, sparsity_of
from nmlab.pruning.reference import load_reference, reference_sparsify
from nmlab.pruning.scores import magnitude_score, prune_by_score, wanda_score
from nmlab.pruning.sparsegpt import accumulate_hessian, sparsify_weight


def correlated_layer(rows: int = 32, cols: int = 64, tokens: int = 2048, seed: int = 0):
    """A weight and inputs with strongly correlated features (low rank plus noise), where
    error feedback has something to exploit."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(tokens, 8, generator=g) @ torch.randn(8, cols, generator=g)
    X += 0.1 * torch.randn(tokens, cols, generator=g)
    W = torch.randn(rows, cols, generator=g)
    H, n = accumulate_hessian(torch.zeros(cols, cols), X, 0)
    assert n == tokens
    return W, X, H


def recon_error(W: torch.Tensor, W_new: torch.Tensor, X: torch.Tensor) -> float:
    return float(((X @ (W_new - W).T) ** 2).mean())


def test_hessian_accumulates_in_chunks() -> None:
    X = torch.randn(300, 16, generator=torch.Generator().manual_seed(0))
    H, n = torch.zeros(16, 16), 0
    for chunk in X.split(70):
        H, n = accumulate_hessian(H, chunk, n)
    assert n == 300
    torch.testing.assert_close(H, 2 * X.T @ X / 300, rtol=1e-5, atol=1e-5)


def test_wanda_equals_magnitude_when_norms_are_equal() -> None:
    W = torch.randn(16, 32, generator=torch.Generator().manual_seed(0))
    for pattern in (NM(2, 4), NM(8, 16), Unstructured(0.5), Unstructured(0.3, "layer")):
        _, m_mag = prune_by_score(W, magnitude_score(W), pattern)
        _, m_wanda = prune_by_score(W, wanda_score(W, torch.full((32,), 3.7)), pattern)
        assert torch.equal(m_mag, m_wanda)


def test_wanda_weighs_by_input_norm() -> None:
    W = torch.ones(4, 8)
    norms = torch.tensor([1.0, 9, 1, 9, 9, 1, 9, 1])
    W_new, mask = prune_by_score(W, wanda_score(W, norms), NM(2, 4))
    assert torch.equal(mask[0], norms > 5)
    assert torch.equal(W_new, W * mask)


@pytest.mark.parametrize("pattern", [NM(2, 4), NM(4, 8), NM(8, 16), NM(1, 4), NM(6, 16)])
def test_sparsegpt_nm_exact(pattern: NM) -> None:
    W, X, H = correlated_layer()
    W_new, mask = sparsify_weight(W, H, pattern, blocksize=20)  # rounded up to a multiple of M
    assert is_nm(mask, pattern.n, pattern.m)
    assert (W_new[~mask] == 0).all()
    assert W_new.dtype == W.dtype and W_new.shape == W.shape


@pytest.mark.parametrize(
    "pattern", [NM(2, 4), NM(8, 16), Unstructured(0.5), Unstructured(0.5, "layer")]
)
def test_sparsegpt_beats_magnitude_on_correlated_inputs(pattern) -> None:
    W, X, H = correlated_layer()
    W_sgpt, mask = sparsify_weight(W, H, pattern, blocksize=32)
    W_mag = W * select_mask(W.abs(), pattern)
    assert sparsity_of(mask) == pytest.approx(0.5)
    assert recon_error(W, W_sgpt, X) < 0.5 * recon_error(W, W_mag, X)


def test_sparsegpt_bad_inputs() -> None:
    W, _, H = correlated_layer()
    with pytest.raises(PruningError, match="not positive definite"):
        sparsify_weight(W, -torch.eye(64), NM(2, 4), percdamp=0.0)
    with pytest.raises(PruningError, match="not divisible"):
        sparsify_weight(W[:, :60], H[:60, :60], NM(8, 16))
    with pytest.raises(PruningError, match="does not match"):
        sparsify_weight(W, H[:32, :32], NM(2, 4))


def test_sparsegpt_dead_inputs_are_pruned() -> None:
    W, X, _ = correlated_layer()
    X[:, 5] = 0
    H, _ = accumulate_hessian(torch.zeros(64, 64), X, 0)
    W_new, mask = sparsify_weight(W, H, NM(2, 4))
    assert not mask[:, 5].any() and is_nm(mask, 2, 4)


needs_reference = pytest.mark.skipif(
    load_reference() is None, reason="llmcompressor (reference SparseGPT) not installed"
)


@needs_reference
@pytest.mark.parametrize("pattern", [NM(2, 4), NM(4, 8), NM(8, 16), NM(1, 4), NM(6, 16)])
def test_sparsegpt_matches_reference_nm(pattern: NM) -> None:
    W, X, H = correlated_layer(rows=48, cols=128)
    ours, mask = sparsify_weight(W, H, pattern, blocksize=32, percdamp=0.01)
    ref, ref_mask = reference_sparsify(W, H, pattern, blocksize=32, percdamp=0.01)
    assert torch.equal(mask, ref_mask)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert recon_error(W, ours, X) == pytest.approx(recon_error(W, ref, X), rel=1e-5)


@needs_reference
def test_sparsegpt_matches_reference_unstructured() -> None:
    # The reference prunes every score <= the k-th smallest of each block (k + ties,
    # so one more weight per block); ours prunes exactly k. Otherwise the same choice.
    W, X, H = correlated_layer(rows=48, cols=128)
    ours, mask = sparsify_weight(W, H, Unstructured(0.5, "layer"), blocksize=32)
    ref, ref_mask = reference_sparsify(W, H, Unstructured(0.5, "layer"), blocksize=32)
    blocks = 128 // 32
    assert int((mask != ref_mask).sum()) <= blocks * 2
    assert int((mask & ~ref_mask).sum()) <= blocks
    assert recon_error(W, ours, X) == pytest.approx(recon_error(W, ref, X), rel=0.05)
