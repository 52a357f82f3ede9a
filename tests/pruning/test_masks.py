"""Patterns, mask selection and the packed mask file."""

from __future__ import annotations

import pytest
import torch

from nmlab.pruning.errors import PruningError
from nmlab.pruning.masks import (
    NM,
    Unstructured,
    check_weight,
    is_nm,
    nm_mask,
    parse_pattern,
    select_mask,
    sparsity_of,
    unstructured_mask,
)
from nmlab.pruning.storage import load_masks, pack_mask, save_masks, unpack_mask

PATTERNS = [(2, 4), (4, 8), (8, 16), (16, 32), (1, 4), (6, 16), (3, 5)]


def test_parse_pattern() -> None:
    assert parse_pattern("8:16") == NM(8, 16)
    assert parse_pattern(" 2 : 4 ") == NM(2, 4)
    assert parse_pattern("50%") == Unstructured(0.5, "row")
    assert parse_pattern("60%-layer") == Unstructured(0.6, "layer")
    assert str(parse_pattern("50%-layer")) == "50%-layer"


@pytest.mark.parametrize("text", ["4:4", "5:4", "0:4", "1:1", "100%", "half", "2/4", ""])
def test_parse_pattern_rejects(text: str) -> None:
    with pytest.raises(PruningError):
        parse_pattern(text)


@pytest.mark.parametrize(("n", "m"), PATTERNS)
def test_nm_mask_is_exact_and_keeps_top_scores(n: int, m: int) -> None:
    score = torch.rand(12, m * 6, generator=torch.Generator().manual_seed(n * 100 + m))
    mask = nm_mask(score, n, m)
    assert mask.dtype == torch.bool and mask.shape == score.shape
    assert is_nm(mask, n, m)
    assert sparsity_of(mask) == pytest.approx(1 - n / m)
    groups, kept = score.reshape(12, 6, m), mask.reshape(12, 6, m)
    low_kept = torch.where(kept, groups, torch.inf).amin(-1)
    high_dropped = torch.where(~kept, groups, -torch.inf).amax(-1)
    assert (low_kept >= high_dropped).all()


@pytest.mark.parametrize("scope", ["row", "layer"])
def test_unstructured_sparsity(scope: str) -> None:
    score = torch.rand(10, 50, generator=torch.Generator().manual_seed(0))
    mask = unstructured_mask(score, 0.5, scope)
    assert sparsity_of(mask) == pytest.approx(0.5)
    if scope == "row":
        assert (mask.sum(1) == 25).all()
    else:
        assert score[mask].min() >= score[~mask].max()
    assert select_mask(score, Unstructured(0.0)).all()


def test_check_weight_errors() -> None:
    W = torch.randn(4, 24)
    check_weight(W, NM(8, 12))
    with pytest.raises(PruningError, match="not divisible by M=16"):
        check_weight(W, NM(8, 16))
    W[1, 2] = float("nan")
    with pytest.raises(PruningError, match="NaN or Inf"):
        check_weight(W, NM(2, 4))
    with pytest.raises(PruningError, match="NaN or Inf"):
        check_weight(torch.full((2, 4), float("inf")), Unstructured(0.5))


def test_mask_file_round_trip(tmp_path) -> None:
    gen = torch.Generator().manual_seed(1)
    masks = {
        "a.weight": torch.rand(5, 13, generator=gen) > 0.5,
        "b.weight": nm_mask(torch.rand(3, 16), 2, 4),
    }
    assert pack_mask(masks["a.weight"]).shape == (5, 2)
    assert torch.equal(unpack_mask(pack_mask(masks["a.weight"]), (5, 13)), masks["a.weight"])
    save_masks(tmp_path / "m.safetensors", masks)
    back = load_masks(tmp_path / "m.safetensors")
    assert back.keys() == masks.keys()
    assert all(torch.equal(back[k], masks[k]) for k in masks)
