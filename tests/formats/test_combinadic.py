"""Rank <-> positions: exhaustive bijection for every N:M with M <= 16."""

from itertools import combinations
from math import comb

import pytest

from nmlab.formats import FormatError
from nmlab.formats.combinadic import rank, unrank
from nmlab.formats.fast import positions_table


@pytest.mark.parametrize("m", range(2, 17))
def test_every_rank_maps_to_a_distinct_set_and_back(m: int) -> None:
    for n in range(1, m):
        seen = set()
        for r in range(comb(m, n)):
            positions = unrank(r, n, m)
            assert len(positions) == n and all(0 <= c < m for c in positions)
            assert positions == sorted(set(positions))
            assert rank(positions) == r
            seen.add(tuple(positions))
        assert len(seen) == comb(m, n)  # bijective onto all n-subsets
        assert seen == set(combinations(range(m), n))


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8), (8, 16), (6, 16), (3, 7), (1, 4)])
def test_fast_lookup_table_equals_reference_unrank(n: int, m: int) -> None:
    table = positions_table(m, n)
    assert table.shape == (comb(m, n), n)
    for r in range(comb(m, n)):
        assert list(table[r]) == unrank(r, n, m)


def test_colex_rank_does_not_depend_on_m() -> None:
    assert rank([1, 3]) == 4 and unrank(4, 2, 4) == unrank(4, 2, 9) == [1, 3]


def test_spec_worked_examples() -> None:
    assert [unrank(r, 2, 4) for r in range(6)] == [
        [0, 1], [0, 2], [1, 2], [0, 3], [1, 3], [2, 3],
    ]  # fmt: skip
    assert rank([0, 2, 4, 6, 8, 10, 12, 14]) == 4081
    assert rank(list(range(8, 16))) == comb(16, 8) - 1
    assert unrank(1000, 8, 16) == [0, 1, 2, 7, 8, 9, 11, 12]


def test_bad_ranks_and_positions() -> None:
    with pytest.raises(FormatError, match="out of range"):
        unrank(6, 2, 4)
    with pytest.raises(FormatError, match="out of range"):
        unrank(-1, 2, 4)
    with pytest.raises(FormatError, match="strictly increasing"):
        rank([3, 1])
