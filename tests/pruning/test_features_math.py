"""Pure functions behind the driver features: moment-based Variance Correction, the
K':256 that holds the encoder's outliers, SparseGPT around fixed outliers, and the
norm fold for Gemma's (1 + g) RMSNorm."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nmlab.formats import decode, encode
from nmlab.formats.split import default_outlier_mask
from nmlab.pruning.errors import PruningError
from nmlab.pruning.masks import NM
from nmlab.pruning.methods import LayerStats, make_method
from nmlab.pruning.outliers import (
    encoded_outlier_k,
    encoder_outlier_mask,
    k_holding,
    outliers_per_row,
    prune_with_outliers,
    slots_for,
    structured_outlier_mask,
    unstructured_outlier_mask,
)
from nmlab.pruning.rebalance import fold_into_norm
from nmlab.pruning.sparsegpt import accumulate_hessian, sparsify_weight
from nmlab.pruning.variance import (
    covariance_from_moments,
    row_gamma_moments,
    row_gamma_outputs,
    variance_correction_moments,
    variance_correction_outputs,
)


def layer(rows: int = 16, cols: int = 64, tokens: int = 512, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(rows, cols, generator=g) + 0.3
    X = torch.randn(tokens, cols, generator=g) * (1 + 3 * torch.rand(cols, generator=g)) + 2.0
    return W, X


def moments(X: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
    X = X.double()
    return X.shape[0], X.sum(0), X.T @ X


# ---------------------------------------------------------------- VC from moments


def test_moment_gamma_equals_activation_gamma() -> None:
    W, X = layer()
    Wp = torch.where(torch.rand(W.shape, generator=torch.Generator().manual_seed(1)) < 0.5, W, 0)
    n, sx, sxx = moments(X)
    torch.testing.assert_close(
        covariance_from_moments(n, sx, sxx), torch.cov(X.double().T, correction=0)
    )
    torch.testing.assert_close(
        row_gamma_moments(W, Wp, n, sx, sxx), row_gamma_outputs(W, Wp, X), rtol=1e-9, atol=1e-12
    )
    torch.testing.assert_close(
        variance_correction_moments(W, Wp, n, sx, sxx), variance_correction_outputs(W, Wp, X)
    )
    # moments add up over chunks of tokens, as the driver accumulates them
    parts = [moments(c) for c in X.split(100)]
    n2 = sum(p[0] for p in parts)
    sx2, sxx2 = sum(p[1] for p in parts), sum(p[2] for p in parts)
    torch.testing.assert_close(row_gamma_moments(W, Wp, n2, sx2, sxx2), row_gamma_outputs(W, Wp, X))
    with pytest.raises(PruningError):
        covariance_from_moments(1, sx, sxx)
    with pytest.raises(PruningError):
        row_gamma_moments(W, Wp, n, sx[:8], sxx[:8, :8])


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_output_vc_method_restores_output_variance(method: str) -> None:
    W, X = layer(cols=32, tokens=1024)
    n, sx, sxx = moments(X)
    H, _ = accumulate_hessian(torch.zeros(32, 32), X, 0)
    stats = LayerStats(n=n, sum_x=sx, sum_xxT=sxx)  # what the driver gathers per method
    if method == "wanda":
        stats.sq_norm = (X * X).sum(0)
    if method == "sparsegpt":
        stats.sq_norm, stats.H = None, H
    m = make_method(method, NM(2, 4), vc="output")
    assert m.moments
    Wc, mask = m.prune("l", W, stats)
    _, mask0 = make_method(method, NM(2, 4)).prune("l", W, stats)
    assert torch.equal(mask, mask0)  # VC never changes the mask
    out_var = (X.double() @ W.double().T).var(0, correction=0)
    torch.testing.assert_close((X.double() @ Wc.double().T).var(0, correction=0), out_var,
                               rtol=1e-4, atol=1e-6)  # fmt: skip
    # with outliers, they keep their value (magnitude/wanda: the dense one)
    Wo, kept = make_method(method, NM(2, 4), outliers=4, vc="output").prune("l", W, stats)
    if method != "sparsegpt":
        score = W.abs() if method == "magnitude" else W.abs() * stats.sq_norm.sqrt()
        Mo = structured_outlier_mask(score, 4)
        assert Mo.any() and kept[Mo].all() and torch.equal(Wo[Mo], W[Mo])


# ---------------------------------------------------------------- K' that the codec needs


def test_encoder_outlier_mask_matches_the_codec() -> None:
    g = torch.Generator().manual_seed(3)
    W = torch.randn(8, 96, generator=g)
    W[torch.rand(W.shape, generator=g) < 0.4] = 0.0
    W[0, :4] = torch.tensor([-0.0, 1.0, -0.0, 2.0])  # -0.0 is occupied for the codec
    W[1, :4] = torch.tensor([3.0, -3.0, 3.0, 0.0])  # ties go to the lower column
    from nmlab.formats.pattern import parse_pattern

    for n, m in ((2, 4), (1, 4), (8, 16)):
        a = W.numpy()
        expected = default_outlier_mask(a, a.view(np.uint32), parse_pattern(f"{n}:{m}"))
        assert np.array_equal(encoder_outlier_mask(W, n, m).numpy(), expected)


def test_k_holding_and_tail_rule() -> None:
    assert k_holding({256: 5}) == 5 and k_holding({256: 0}) == 1
    # a 64-wide tail holds ceil(K*64/256) slots: 4 outliers there need K = 13..16 -> 13
    assert k_holding({64: 4}) == 13 and slots_for(64, 13) == 4 and slots_for(64, 12) == 3
    assert k_holding({256: 3, 64: 4}) == 13
    with pytest.raises(PruningError):
        k_holding({8: 9})


@pytest.mark.parametrize("cols", [576, 1536])
def test_unstructured_outliers_encode_with_encoded_k(cols: int) -> None:
    g = torch.Generator().manual_seed(cols)
    W = torch.randn(8, cols, generator=g)
    W[:, :40] *= 30  # saliency piled up at the start of each row
    per_row = outliers_per_row(cols, 8)
    Mo = unstructured_outlier_mask(W.abs(), per_row)
    Wp, _, _ = prune_with_outliers(W, None, Mo, lambda w: _mag(w, 2, 4))
    k = encoded_outlier_k([Wp], 2, 4)
    assert k > 8  # more than 8 in the first block: K:256 = 8 cannot hold them
    a = Wp.numpy()
    enc = encode(a, "2:4", layout="rank", outliers=f"{k}:256")
    assert np.array_equal(decode(enc).view(np.uint32), a.view(np.uint32))
    with pytest.raises(Exception, match="slots"):
        encode(a, "2:4", layout="rank", outliers=f"{k - 1}:256")
    # structured outliers need exactly K (or less)
    Ws, _, _ = prune_with_outliers(W, W.abs(), structured_outlier_mask(W.abs(), 8),
                                   lambda w: _mag(w, 2, 4))  # fmt: skip
    assert encoded_outlier_k([Ws], 2, 4) <= 8


def _mag(w: torch.Tensor, n: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    from nmlab.pruning.scores import magnitude_score, prune_by_score

    return prune_by_score(w, magnitude_score(w), NM(n, m))


# ---------------------------------------------------------------- SparseGPT with outliers


def correlated(rows: int = 32, cols: int = 128, tokens: int = 2048, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(tokens, 12, generator=g) @ torch.randn(12, cols, generator=g)
    X += 0.1 * torch.randn(tokens, cols, generator=g)
    W = torch.randn(rows, cols, generator=g)
    W[torch.rand(W.shape, generator=g) < 0.03] *= 15
    H, _ = accumulate_hessian(torch.zeros(cols, cols), X, 0)
    return W, X, H


@pytest.mark.parametrize("pattern", [NM(2, 4), NM(8, 16)])
def test_sparsegpt_keeps_outliers_and_beats_zero_then_prune(pattern: NM) -> None:
    W, X, H = correlated()
    score = W.abs() * H.diagonal().sqrt()
    Mo = structured_outlier_mask(score, 16)
    W1, M1 = sparsify_weight(W, H, pattern, keep=Mo)
    assert (W1[Mo] != 0).all() and M1[Mo].all()
    main = M1 & ~Mo
    rows, cols = W.shape
    per_group = main.reshape(rows, -1, pattern.m).sum(-1)
    assert (per_group == pattern.n).all()  # exact N:M on the non-outlier positions
    assert (W1[~M1] == 0).all() and not torch.signbit(W1[~M1]).any()
    # the old way: zero the outliers, prune the rest, discard updates at the outliers
    W0, _, _ = prune_with_outliers(W, score, Mo, lambda w: sparsify_weight(w, H, pattern))
    err_new = float(((X @ (W1 - W).T) ** 2).sum())
    err_old = float(((X @ (W0 - W).T) ** 2).sum())
    assert err_new <= err_old


def test_sparsegpt_keep_more_than_m_minus_n_and_checks() -> None:
    W, _, H = correlated(rows=4, cols=16)
    keep = torch.zeros_like(W, dtype=torch.bool)
    keep[0, :3] = True  # 3 outliers in one 2:4 group: the one other position is kept
    W1, M1 = sparsify_weight(W, H, NM(2, 4), keep=keep)
    assert M1[0, :4].all() and (M1[1:].reshape(3, -1, 4).sum(-1) == 2).all()
    with pytest.raises(PruningError):
        sparsify_weight(W, H, NM(2, 4), keep=keep[:, :8])


# ---------------------------------------------------------------- norm fold, (1 + g) form


def test_fold_into_offset_norm() -> None:
    g = torch.randn(16, generator=torch.Generator().manual_seed(0)) * 0.1
    s = torch.rand(16, generator=torch.Generator().manual_seed(1)) + 0.5
    folded = fold_into_norm(g, s, offset=1.0)
    torch.testing.assert_close(1 + folded, (1 + g) / s)
    torch.testing.assert_close(fold_into_norm(g, s), g / s)
