"""N:M and K:B patterns and the format arithmetic of spec/format.md section 3."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import FormatError

MAX_M = 32
OUTLIER_BLOCK = 256
MAX_OUTLIER_K = 64


def rank_bits(m: int, n: int) -> int:
    """Bits of one combinatorial rank: ceil(log2 C(m, n)); 0 when C(m, n) == 1."""
    count = math.comb(m, n)
    return (count - 1).bit_length()


def entropy_bits(m: int, n: int) -> float:
    """log2 C(m, n): the information content of one group's positions."""
    return math.log2(math.comb(m, n))


def index_bits(m: int) -> int:
    """Bits of one plain position index inside a group of m: ceil(log2 m)."""
    return (m - 1).bit_length()


def parse_pair(text: str, what: str, example: str) -> tuple[int, int]:
    """Split "8:16" into (8, 16); a FormatError naming `what` otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(text))
    if not match:
        raise FormatError(f"{what} {text!r}: expected {example}")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class Pattern:
    """N kept positions in every group of M consecutive elements of a row."""

    n: int
    m: int

    def __post_init__(self) -> None:
        if not (1 <= self.m <= MAX_M):
            raise FormatError(f"pattern {self.n}:{self.m}: M must be in 2..{MAX_M}")
        if not (1 <= self.n < self.m):
            raise FormatError(f"pattern {self.n}:{self.m}: N must satisfy 1 <= N < M")

    @classmethod
    def parse(cls, text: str) -> Pattern:
        return cls(*parse_pair(text, "pattern", "N:M, e.g. 8:16"))

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"

    @property
    def combinations(self) -> int:
        return math.comb(self.m, self.n)

    @property
    def rank_bits(self) -> int:
        return rank_bits(self.m, self.n)

    @property
    def index_bits(self) -> int:
        return index_bits(self.m)

    @property
    def density(self) -> float:
        return self.n / self.m


@dataclass(frozen=True)
class OutlierPattern:
    """K kept outliers in every block of 256 consecutive elements of a row."""

    k: int
    block: int = OUTLIER_BLOCK

    def __post_init__(self) -> None:
        if self.block != OUTLIER_BLOCK:
            raise FormatError(f"outliers {self.k}:{self.block}: the block must be {OUTLIER_BLOCK}")
        if not (1 <= self.k <= MAX_OUTLIER_K):
            raise FormatError(f"outliers {self.k}:{self.block}: K must be in 1..{MAX_OUTLIER_K}")

    @classmethod
    def parse(cls, text: str) -> OutlierPattern:
        return cls(*parse_pair(text, "outliers", "K:256, e.g. 16:256"))

    def __str__(self) -> str:
        return f"{self.k}:{self.block}"

    def block_lengths(self, cols: int) -> list[int]:
        """Lengths of the blocks of one row: full 256-blocks, then a short tail."""
        full, tail = divmod(cols, self.block)
        return [self.block] * full + ([tail] if tail else [])

    def k_for(self, length: int) -> int:
        """Outlier slots in a block of `length` elements: ceil(K * L / 256), at most L."""
        return min(length, -(-self.k * length // self.block))

    def rank_bits_for(self, length: int) -> int:
        return rank_bits(length, self.k_for(length))


def parse_pattern(text: str | Pattern) -> Pattern:
    return text if isinstance(text, Pattern) else Pattern.parse(text)


def parse_outliers(text: str | OutlierPattern | None) -> OutlierPattern | None:
    if text is None or isinstance(text, OutlierPattern):
        return text
    return OutlierPattern.parse(text)
