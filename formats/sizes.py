"""Stream sizes in bits, straight from the arithmetic of spec/format.md.

Decoders use these to reject truncated or over-long streams before reading.
"""

from __future__ import annotations

from .errors import FormatError
from .pattern import OutlierPattern, Pattern

MAX_JOINT_WORD_BITS = 63  # the fast path holds one joint word in a uint64


def joint_word_bits(pattern: Pattern, groups: int) -> int:
    """Bits of one joint word holding `groups` ranks: ceil(log2 C(M,N)^groups)."""
    return (pattern.combinations**groups - 1).bit_length()


def default_joint_groups(pattern: Pattern) -> int:
    """Groups per joint word with the fewest bits per group within a 63-bit word."""
    best, best_cost = 1, float(pattern.rank_bits)
    groups = 1
    while joint_word_bits(pattern, groups + 1) <= MAX_JOINT_WORD_BITS:
        groups += 1
        cost = joint_word_bits(pattern, groups) / groups
        if cost < best_cost - 1e-12:
            best, best_cost = groups, cost
    return best


def group_count(shape: tuple[int, int], pattern: Pattern) -> int:
    rows, cols = shape
    if cols % pattern.m:
        raise FormatError(
            f"shape {shape}: the row length {cols} is not a multiple of M={pattern.m}"
        )
    return rows * (cols // pattern.m)


def meta_bits(
    shape: tuple[int, int], pattern: Pattern, layout: str, joint_groups: int | None = None
) -> int:
    """Total bits of the N:M metadata stream before byte padding."""
    groups = group_count(shape, pattern)
    if layout == "rank":
        return groups * pattern.rank_bits
    if layout == "bitmask":
        return groups * pattern.m
    if layout == "positional":
        return groups * pattern.n * pattern.index_bits
    if layout == "joint":
        if not joint_groups or joint_groups < 1:
            raise FormatError("layout joint needs joint_groups >= 1")
        words, tail = divmod(groups, joint_groups)
        tail_bits = joint_word_bits(pattern, tail) if tail else 0
        return words * joint_word_bits(pattern, joint_groups) + tail_bits
    raise FormatError(f"no bit arithmetic for layout {layout!r}")


def value_count(shape: tuple[int, int], pattern: Pattern) -> int:
    """Kept values stored: N per group, padding slots included."""
    return group_count(shape, pattern) * pattern.n


def outlier_slots(shape: tuple[int, int], outliers: OutlierPattern) -> int:
    rows, cols = shape
    return rows * sum(outliers.k_for(length) for length in outliers.block_lengths(cols))


def outlier_position_bits(shape: tuple[int, int], outliers: OutlierPattern, layout: str) -> int:
    rows, cols = shape
    lengths = outliers.block_lengths(cols)
    if layout == "rank":
        return rows * sum(outliers.rank_bits_for(length) for length in lengths)
    if layout == "index":
        return 8 * outlier_slots(shape, outliers)
    raise FormatError(f"unknown outlier layout {layout!r} (rank or index)")


def byte_length(bits: int) -> int:
    return (bits + 7) // 8


def check_length(data: bytes, expected: int, what: str) -> None:
    """A stream must be exactly `expected` bytes: shorter is truncated, longer trails."""
    if len(data) < expected:
        raise FormatError(f"{what} stream truncated: {len(data)} bytes, expected {expected}")
    if len(data) > expected:
        raise FormatError(f"{what} stream has {len(data) - expected} trailing bytes")


def check_bitstream(data: bytes, total_bits: int, what: str) -> None:
    """Spec 5.1: exactly ceil(total_bits / 8) bytes, and the padding bits are zero."""
    check_length(data, byte_length(total_bits), what)
    if total_bits % 8 and data[-1] >> (total_bits % 8):
        raise FormatError(f"{what} stream has non-zero padding bits")
