"""Colex combinadic: the rank of a set of kept positions (spec section 4).

For kept positions c_1 < c_2 < ... < c_N inside a group,

    rank = C(c_1, 1) + C(c_2, 2) + ... + C(c_N, N)

with C(c, i) = 0 when c < i. The rank lies in [0, C(M, N)) and does not
depend on M, which is why colex (not lex) order was chosen: a decoder can
unrank greedily from the largest position down without knowing M.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import comb

from .errors import FormatError


def rank(positions: Sequence[int]) -> int:
    """Colex rank of strictly increasing positions."""
    total = 0
    previous = -1
    for i, c in enumerate(positions, start=1):
        if c <= previous:
            raise FormatError(f"positions {list(positions)} are not strictly increasing")
        previous = c
        total += comb(c, i)
    return total


def unrank(r: int, n: int, m: int) -> list[int]:
    """Inverse of :func:`rank` for n positions drawn from range(m)."""
    if not (0 <= r < comb(m, n)):
        raise FormatError(f"rank {r} out of range for {n}:{m} (must be < {comb(m, n)})")
    positions = [0] * n
    c = m - 1
    for i in range(n, 0, -1):
        while comb(c, i) > r:
            c -= 1
        positions[i - 1] = c
        r -= comb(c, i)
        c -= 1
    return positions
