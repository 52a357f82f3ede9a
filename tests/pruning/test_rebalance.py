"""SmoothQuant-style rebalancing: the scales, the exact fold into the preceding norm, and
the invariances of the pruning scores under W -> W·diag(s), X -> X·diag(1/s)."""

from __future__ import annotations

import pytest
import torch

from nmlab.pruning.errors import PruningError
from nmlab.pruning.masks import NM, Unstructured, select_mask
from nmlab.pruning.rebalance import (
    fold_into_norm,
    rebalance,
    smooth_scales,
    unbalance,
    weight_absmax,
)
from nmlab.pruning.scores import magnitude_score, wanda_score
from nmlab.pruning.sparsegpt import accumulate_hessian, sparsify_weight


def rms_norm(x: torch.Tensor, g: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * g


def layer(rows: int = 12, cols: int = 32, tokens: int = 512, seed: int = 0):
    """Inputs with a few large channels (as in LLM activations) and a weight."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(tokens, cols, generator=g, dtype=torch.float64)
    X[:, :3] *= 30.0
    W = torch.randn(rows, cols, generator=g, dtype=torch.float64)
    return W, X


def test_scales_formula() -> None:
    x = torch.tensor([4.0, 1.0, 9.0, 0.25])
    w = torch.tensor([1.0, 4.0, 0.25, 1.0])
    torch.testing.assert_close(smooth_scales(x, w), torch.tensor([2.0, 0.5, 6.0, 0.5]))
    torch.testing.assert_close(smooth_scales(x, w, alpha=1.0), x)
    torch.testing.assert_close(smooth_scales(x, w, alpha=0.0), 1 / w)
    # after smoothing (α = 0.5) activation and weight maxima are balanced: equal per channel
    s = smooth_scales(x, w)
    torch.testing.assert_close(x / s, w * s)


def test_scales_zero_and_extreme_channels() -> None:
    x = torch.tensor([0.0, 3.0, 0.0, 1e30, 1e-30])
    w = torch.tensor([2.0, 0.0, 0.0, 1e-30, 1.0])
    s = smooth_scales(x, w, eps=1e-5)
    assert torch.isfinite(s).all() and (s > 0).all()
    assert s[:3].tolist() == [1.0, 1.0, 1.0]  # dead channels are left alone
    assert 1e-5 <= s.min() and s.max() <= 1e5
    with pytest.raises(PruningError):
        smooth_scales(x, w[:3])
    with pytest.raises(PruningError):
        smooth_scales(x, w, alpha=1.5)
    with pytest.raises(PruningError):
        smooth_scales(torch.tensor([float("inf")]), torch.tensor([1.0]))


def test_fold_into_norm_keeps_block_output() -> None:
    """RMSNorm + q/k-like Linears sharing it: output unchanged after rescale and fold."""
    torch.manual_seed(0)
    hidden, tokens = 32, 64
    x = torch.randn(tokens, hidden)
    x[:, 5] *= 40.0  # an outlier channel
    g = 1 + 0.1 * torch.randn(hidden)
    q, k = torch.nn.Linear(hidden, 48, bias=True), torch.nn.Linear(hidden, 16, bias=False)
    before = [lin(rms_norm(x, g)) for lin in (q, k)]
    h = rms_norm(x, g)
    s = smooth_scales(h.abs().amax(0), weight_absmax([q.weight, k.weight]))
    assert not torch.allclose(s, torch.ones_like(s))
    g2 = fold_into_norm(g, s)
    with torch.no_grad():
        q.weight.copy_(rebalance([q.weight], s)[0])
        k.weight.copy_(rebalance([k.weight], s)[0])
    after = [lin(rms_norm(x, g2)) for lin in (q, k)]
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # the activations the Linears now see are balanced: max|X̂_j| = max|Ŵ_:,j|
    h2 = rms_norm(x, g2)
    torch.testing.assert_close(
        h2.abs().amax(0), weight_absmax([q.weight, k.weight]), rtol=1e-5, atol=1e-6
    )


def test_weight_absmax_and_unbalance() -> None:
    a, b = torch.tensor([[1.0, -5.0], [2.0, 0.0]]), torch.tensor([[-3.0, 1.0]])
    assert weight_absmax([a, b]).tolist() == [3.0, 5.0]
    with pytest.raises(PruningError):
        weight_absmax([a, torch.zeros(2, 3)])
    s = torch.tensor([2.0, 0.5])
    W = rebalance([a], s)[0]
    assert torch.equal(unbalance(W, s), a)
    assert not torch.signbit(unbalance(torch.zeros(1, 2), s)).any()


@pytest.mark.parametrize("pattern", [NM(2, 4), NM(8, 16), Unstructured(0.5)])
def test_wanda_score_and_mask_are_invariant(pattern) -> None:
    W, X = layer(cols=64)
    s = smooth_scales(X.abs().amax(0), W.abs().amax(0)).double()
    W_hat, X_hat = rebalance([W], s)[0], X / s
    before, after = wanda_score(W, X.norm(dim=0)), wanda_score(W_hat, X_hat.norm(dim=0))
    torch.testing.assert_close(before, after, rtol=1e-12, atol=0)
    assert torch.equal(select_mask(before, pattern), select_mask(after, pattern))


def test_magnitude_mask_changes() -> None:
    # 1:2 on [1, 2]: magnitude keeps column 1; after s = [4, 1] it keeps column 0
    W, s = torch.tensor([[1.0, 2.0]]), torch.tensor([4.0, 1.0])
    assert select_mask(magnitude_score(W), NM(1, 2)).tolist() == [[False, True]]
    W_hat = rebalance([W], s)[0]
    assert select_mask(magnitude_score(W_hat), NM(1, 2)).tolist() == [[True, False]]
    # and on a realistic layer, many choices move toward the large-activation channels
    W, X = layer(cols=64)
    s = smooth_scales(X.abs().amax(0), W.abs().amax(0)).double()
    m0 = select_mask(magnitude_score(W), NM(2, 4))
    m1 = select_mask(magnitude_score(rebalance([W], s)[0]), NM(2, 4))
    assert (m0 != m1).sum() > 0.05 * m0.numel()
    assert m1[:, :3].sum() > m0[:, :3].sum()


@pytest.mark.parametrize("pattern", [NM(2, 4), NM(8, 16)])
def test_sparsegpt_mask_is_invariant_without_damping(pattern) -> None:
    """H = 2XᵀX/n becomes diag(1/s) H diag(1/s); with no dampening the OBS scores
    w²/[H⁻¹]_jj² and the updates are unchanged: same mask, W'·diag(1/s) = old W'."""
    W, X = layer(rows=8, cols=32, tokens=2048, seed=1)
    s = smooth_scales(X.abs().amax(0), W.abs().amax(0)).double()
    H, _ = accumulate_hessian(torch.zeros(32, 32, dtype=torch.float64), X, 0)
    D = torch.diag(1 / s)
    H_hat = D @ H @ D
    torch.testing.assert_close(H_hat, accumulate_hessian(torch.zeros_like(H), X / s, 0)[0])
    W0, M0 = sparsify_weight(W, H, pattern, percdamp=0.0)
    W1, M1 = sparsify_weight(rebalance([W], s)[0], H_hat, pattern, percdamp=0.0)
    assert torch.equal(M0, M1)
    torch.testing.assert_close(unbalance(W1, s), W0, rtol=1e-3, atol=1e-4)
    # the default 1% dampening is not scale-covariant: the updates differ slightly
    Wd0, _ = sparsify_weight(W, H, pattern)
    Wd1, _ = sparsify_weight(rebalance([W], s)[0], H_hat, pattern)
    assert not torch.allclose(unbalance(Wd1, s), Wd0, rtol=1e-5, atol=1e-6)
