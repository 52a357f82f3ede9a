"""The format cost table: metadata bits of every position encoding, per pattern."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from math import comb, log2

from .pattern import OUTLIER_BLOCK, OutlierPattern, Pattern, parse_pair, rank_bits
from .sizes import default_joint_groups, joint_word_bits

DEFAULT_PATTERNS = ("2:4", "4:8", "8:16", "16:32", "4:256", "8:256", "16:256")


@dataclass(frozen=True)
class FormatCost:
    pattern: str
    kind: str  # "N:M" or "K:256 outliers"
    combinations: int
    rank_bits_per_group: int
    rank_bits_per_element: float
    entropy_bits_per_element: float
    joint_groups: int | None
    joint_bits_per_element: float | None
    positional_bits_per_element: float
    bitmask_bits_per_element: float
    nvidia_bits_per_element: float | None  # the 2:4 nibble layout, 2:4 only

    def as_dict(self) -> dict:
        return asdict(self)


def format_cost(text: str) -> FormatCost:
    """Costs of one pattern: N:M with M <= 32, or K:256 outliers."""
    n, m = parse_pair(text, "pattern", "N:M (M <= 32) or K:256")
    if m == OUTLIER_BLOCK:
        outliers = OutlierPattern(n)
        return FormatCost(
            pattern=str(outliers),
            kind="K:256 outliers",
            combinations=comb(m, n),
            rank_bits_per_group=rank_bits(m, n),
            rank_bits_per_element=rank_bits(m, n) / m,
            entropy_bits_per_element=log2(comb(m, n)) / m,
            joint_groups=None,
            joint_bits_per_element=None,
            positional_bits_per_element=8 * n / m,
            bitmask_bits_per_element=1.0,
            nvidia_bits_per_element=None,
        )
    pattern = Pattern.parse(text)
    groups = default_joint_groups(pattern)
    return FormatCost(
        pattern=str(pattern),
        kind="N:M",
        combinations=pattern.combinations,
        rank_bits_per_group=pattern.rank_bits,
        rank_bits_per_element=pattern.rank_bits / m,
        entropy_bits_per_element=log2(pattern.combinations) / m,
        joint_groups=groups,
        joint_bits_per_element=joint_word_bits(pattern, groups) / (groups * m),
        positional_bits_per_element=n * pattern.index_bits / m,
        bitmask_bits_per_element=1.0,
        nvidia_bits_per_element=1.0 if (n, m) == (2, 4) else None,
    )


def format_table(patterns: list[str] | tuple[str, ...] = DEFAULT_PATTERNS) -> list[FormatCost]:
    seen: list[str] = []
    for p in patterns:
        if p not in seen:
            seen.append(p)
    return [format_cost(p) for p in seen]
