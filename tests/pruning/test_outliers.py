"""Outlier selection (K:256 structured, unstructured per row/layer) and pruning with
outliers kept outside the N:M pattern, checked against the codec bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nmlab.formats import OutlierPattern, decode, encode
from nmlab.pruning.errors import PruningError
from nmlab.pruning.masks import NM, is_nm
from nmlab.pruning.outliers import (
    block_lengths,
    outliers_per_row,
    prune_with_outliers,
    slots_for,
    structured_outlier_mask,
    unstructured_outlier_mask,
)
from nmlab.pruning.scores import magnitude_score, prune_by_score, wanda_score
from nmlab.pruning.sparsegpt import accumulate_hessian, sparsify_weight


def heavy_tailed(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    """Gaussian weights with a few large salient entries, as in LLM layers."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(rows, cols, generator=g)
    spikes = torch.rand(rows, cols, generator=g) < 0.02
    return torch.where(spikes, 20 * torch.randn(rows, cols, generator=g), W)


@pytest.mark.parametrize("cols", [16, 200, 256, 576, 1536])
@pytest.mark.parametrize("k", [1, 4, 8, 16, 64])
def test_slot_rule_matches_codec(cols: int, k: int) -> None:
    op = OutlierPattern(k)
    assert block_lengths(cols) == op.block_lengths(cols)
    assert [slots_for(L, k) for L in block_lengths(cols)] == [
        op.k_for(L) for L in op.block_lengths(cols)
    ]
    score = torch.rand(3, cols, generator=torch.Generator().manual_seed(cols + k))
    Mo = structured_outlier_mask(score, k)
    start = 0
    for L in op.block_lengths(cols):
        assert (Mo[:, start : start + L].sum(1) == op.k_for(L)).all()
        start += L
    assert (Mo.sum(1) == outliers_per_row(cols, k)).all()


def test_tail_block_of_576() -> None:
    # 576 = 2 * 256 + 64: the tail gets ceil(16 * 64 / 256) = 4 slots, 36 per row in all
    assert block_lengths(576) == [256, 256, 64]
    assert slots_for(64, 16) == 4 and outliers_per_row(576, 16) == 36
    assert slots_for(3, 4) == 1 and slots_for(1, 64) == 1 and slots_for(2, 255) == 2


def test_structured_picks_top_k_per_block() -> None:
    score = torch.rand(4, 576, generator=torch.Generator().manual_seed(1))
    Mo = structured_outlier_mask(score, 8)
    for r in range(4):
        for start, L in ((0, 256), (256, 256), (512, 64)):
            block = score[r, start : start + L]
            kept = Mo[r, start : start + L]
            kk = slots_for(L, 8)
            assert set(torch.nonzero(kept).flatten().tolist()) == set(
                torch.topk(block, kk).indices.tolist()
            )
            assert block[kept].min() >= block[~kept].max()


def test_ties_go_to_lower_column() -> None:
    score = torch.zeros(2, 300)
    Mo = structured_outlier_mask(score, 4)
    assert torch.nonzero(Mo[0, :256]).flatten().tolist() == [0, 1, 2, 3]
    assert torch.nonzero(Mo[0, 256:]).flatten().tolist() == [0]  # ceil(4*44/256) = 1 slot
    U = unstructured_outlier_mask(score, 3, scope="row")
    assert torch.nonzero(U[1]).flatten().tolist() == [0, 1, 2]
    L = unstructured_outlier_mask(score, 3, scope="layer")
    assert torch.nonzero(L).tolist() == [[0, 0], [0, 1], [0, 2]]


@pytest.mark.parametrize("cols", [576, 1536])
@pytest.mark.parametrize("k", [4, 16])
def test_unstructured_has_same_budget(cols: int, k: int) -> None:
    W = heavy_tailed(8, cols, seed=2)
    score = W.abs()
    S = structured_outlier_mask(score, k)
    per_row = outliers_per_row(cols, k)
    R = unstructured_outlier_mask(score, per_row, scope="row")
    Ly = unstructured_outlier_mask(score, 8 * per_row, scope="layer")
    assert S.sum() == R.sum() == Ly.sum() == 8 * per_row
    assert (R.sum(1) == per_row).all()
    # free choice captures at least as much saliency as the structured one
    assert score[S].sum() <= score[R].sum() + 1e-4 <= score[Ly].sum() + 2e-4
    # the layer scope holds exactly the global top scores
    assert score[Ly].min() >= score[~Ly].max()


def test_bad_arguments() -> None:
    with pytest.raises(PruningError):
        structured_outlier_mask(torch.rand(4), 4)
    with pytest.raises(PruningError):
        structured_outlier_mask(torch.tensor([[float("nan"), 1.0]]), 1)
    with pytest.raises(PruningError):
        unstructured_outlier_mask(torch.rand(2, 8), 9, scope="row")
    with pytest.raises(PruningError):
        unstructured_outlier_mask(torch.rand(2, 8), 1, scope="column")  # type: ignore[arg-type]
    with pytest.raises(PruningError):
        prune_with_outliers(torch.rand(2, 16), None, 4, lambda w: (w, w != 0))


def magnitude_8_16(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return prune_by_score(W, magnitude_score(W), NM(8, 16))


def roundtrip(Wp: torch.Tensor, Mo: torch.Tensor, dtype: type, k: int) -> None:
    """W' encodes as 8:16 + K:256 with this outlier mask and decodes bit for bit."""
    a = Wp.numpy().astype(dtype)
    enc = encode(a, "8:16", outliers=f"{k}:256", outlier_mask=Mo.numpy())
    out = decode(enc)
    bits = np.dtype(f"u{a.dtype.itemsize}")
    assert out.dtype == a.dtype
    assert np.array_equal(out.view(bits), a.view(bits))


@pytest.mark.parametrize("cols", [576, 1536])
@pytest.mark.parametrize("k", [4, 8, 16])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_prune_with_outliers_is_codec_exact(cols: int, k: int, dtype: type) -> None:
    W = heavy_tailed(6, cols, seed=k)
    Mo = structured_outlier_mask(W.abs(), k)
    Wp, M, Mo2 = prune_with_outliers(W, W.abs(), Mo, magnitude_8_16)
    assert torch.equal(Mo, Mo2)
    assert not (M & Mo).any()
    assert torch.equal(Wp[Mo], W[Mo])  # outliers keep their full value
    assert torch.equal(Wp[M], W[M])  # magnitude: kept main weights unchanged
    pruned = ~(M | Mo)
    assert (Wp[pruned] == 0).all() and not torch.signbit(Wp[pruned]).any()  # +0.0 only
    # the remainder is N:M: at most 8 of 16 per group (exactly 8 where no outlier sits)
    per_group = M.reshape(6, -1, 16).sum(-1)
    no_outlier = Mo.reshape(6, -1, 16).sum(-1) == 0
    assert (per_group <= 8).all() and (per_group[no_outlier] == 8).all()
    assert is_nm(M | Mo, 8, 16) is False or not Mo.any()
    roundtrip(Wp, Mo, dtype, k)
    # the same W' without the outlier stream breaks 8:16 somewhere
    with pytest.raises(Exception, match="violates"):
        encode(Wp.numpy().astype(dtype), "8:16")


def test_int_k_selects_structured_outliers() -> None:
    W = heavy_tailed(4, 576, seed=5)
    Wa, Ma, Oa = prune_with_outliers(W, W.abs(), 16, magnitude_8_16)
    Wb, Mb, Ob = prune_with_outliers(
        W, W.abs(), structured_outlier_mask(W.abs(), 16), magnitude_8_16
    )
    assert torch.equal(Oa, Ob) and torch.equal(Ma, Mb) and torch.equal(Wa, Wb)


def test_outliers_reduce_error_and_keep_negative_zero_out() -> None:
    W = heavy_tailed(8, 576, seed=3)
    plain, _ = magnitude_8_16(W)
    Wp, _, Mo = prune_with_outliers(W, W.abs(), 16, magnitude_8_16)
    assert ((Wp - W) ** 2).sum() < ((plain - W) ** 2).sum()
    # a prune function that leaves -0.0 behind: the result still holds +0.0 only
    Wn, M, Mo = prune_with_outliers(
        W, W.abs(), Mo, lambda w: (-(magnitude_8_16(-w)[0]), magnitude_8_16(w)[1])
    )
    assert not torch.signbit(Wn[~(M | Mo)]).any()


def test_with_wanda_and_sparsegpt_roundtrip() -> None:
    g = torch.Generator().manual_seed(7)
    cols = 576
    X = torch.randn(1024, cols, generator=g) * (1 + 5 * torch.rand(cols, generator=g))
    W = heavy_tailed(8, cols, seed=7)
    score = wanda_score(W, X.norm(dim=0))
    Mo = structured_outlier_mask(score, 8)
    H, _ = accumulate_hessian(torch.zeros(cols, cols), X, 0)

    def wanda(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return prune_by_score(w, wanda_score(w, X.norm(dim=0)), NM(8, 16))

    def sparsegpt(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return sparsify_weight(w, H, NM(8, 16))

    for fn in (wanda, sparsegpt):
        Wp, M, Mo2 = prune_with_outliers(W, score, Mo, fn)
        assert torch.equal(Wp[Mo], W[Mo]) and not (M & Mo).any()
        roundtrip(Wp, Mo, np.float16, 8)
