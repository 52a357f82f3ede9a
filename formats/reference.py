"""Reference encoder and decoder: one group at a time, in the order of spec/format.md.

Written for reading, not speed: Python integers, one loop per group. The fast
paths in :mod:`nmlab.formats.fast` must produce identical bytes.
"""

from __future__ import annotations

from math import comb

import numpy as np

from . import combinadic, sizes
from .bitstream import BitReader, BitWriter
from .errors import FormatError
from .pattern import OutlierPattern, Pattern


def kept_positions(group: np.ndarray, n: int) -> list[int]:
    """Spec 4.2: occupied positions, padded with the lowest unoccupied ones up to n."""
    occupied = [j for j, v in enumerate(group) if v != 0]
    if len(occupied) > n:
        raise FormatError(f"group has {len(occupied)} non-zeros, at most {n} allowed")
    padding = [j for j, v in enumerate(group) if v == 0][: n - len(occupied)]
    return sorted(occupied + padding)


# --- N:M main stream -------------------------------------------------------------------


def encode_main(
    main_bits: np.ndarray, pattern: Pattern, layout: str, joint_groups: int | None = None
) -> tuple[bytes, np.ndarray]:
    """Encode a 2-D array of bit patterns that satisfies `pattern` (spec 5 and 6)."""
    rows, cols = main_bits.shape
    groups = main_bits.reshape(rows * (cols // pattern.m), pattern.m)
    writer = BitWriter()
    values = []
    pending: list[int] = []  # ranks waiting for their joint word
    for group in groups:
        kept = kept_positions(group, pattern.n)
        values.extend(group[j] for j in kept)
        if layout == "rank":
            writer.write(combinadic.rank(kept), pattern.rank_bits)
        elif layout == "bitmask":
            for j in range(pattern.m):
                writer.write(int(j in kept), 1)
        elif layout == "positional":
            for j in kept:
                writer.write(j, pattern.index_bits)
        elif layout == "joint":
            pending.append(combinadic.rank(kept))
            if len(pending) == joint_groups:
                _write_joint(writer, pending, pattern)
                pending = []
        else:
            raise FormatError(f"unknown layout {layout!r}")
    if pending:
        _write_joint(writer, pending, pattern)
    return writer.to_bytes(), np.array(values, dtype=main_bits.dtype)


def _write_joint(writer: BitWriter, ranks: list[int], pattern: Pattern) -> None:
    """Spec 5.4: word = r_0 + r_1*C + r_2*C^2 + ..., in ceil(log2 C^g) bits."""
    word = sum(r * pattern.combinations**i for i, r in enumerate(ranks))
    writer.write(word, sizes.joint_word_bits(pattern, len(ranks)))


def decode_main(
    meta: bytes,
    values: np.ndarray,
    shape: tuple[int, int],
    pattern: Pattern,
    layout: str,
    joint_groups: int | None = None,
    exponent_mask: int | None = None,
) -> np.ndarray:
    """Decode the N:M stream into a 2-D array of bit patterns (zeros elsewhere).

    Spec 6: a value whose exponent field is all ones (Inf/NaN) is an error.
    """
    if exponent_mask:
        count = sum(1 for v in values if int(v) & exponent_mask == exponent_mask)
        if count:
            raise FormatError(f"value: {count} non-finite value(s) (Inf/NaN)")
    rows, cols = shape
    n_groups = sizes.group_count(shape, pattern)
    reader = BitReader(meta, sizes.meta_bits(shape, pattern, layout, joint_groups))
    out = np.zeros(rows * cols, dtype=values.dtype)
    ranks: list[int] = []
    for g in range(n_groups):
        if layout == "rank":
            r = reader.read(pattern.rank_bits)
            kept = _unrank_checked(r, pattern, g)
        elif layout == "bitmask":
            kept = [j for j in range(pattern.m) if reader.read(1)]
            if len(kept) != pattern.n:
                raise FormatError(f"bitmask of group {g} has {len(kept)} bits set, not {pattern.n}")
        elif layout == "positional":
            kept = [reader.read(pattern.index_bits) for _ in range(pattern.n)]
            if any(b <= a for a, b in zip(kept, kept[1:], strict=False)) or kept[-1] >= pattern.m:
                raise FormatError(f"positions {kept} of group {g} are not increasing below M")
        elif layout == "joint":
            if not ranks:
                ranks = _read_joint(reader, pattern, min(joint_groups, n_groups - g), g)
            kept = _unrank_checked(ranks.pop(0), pattern, g)
        else:
            raise FormatError(f"unknown layout {layout!r}")
        for k, j in enumerate(kept):
            out[g * pattern.m + j] = values[g * pattern.n + k]
    return out.reshape(rows, cols)


def _unrank_checked(r: int, pattern: Pattern, g: int) -> list[int]:
    if r >= pattern.combinations:
        raise FormatError(
            f"rank {r} of group {g} out of range for {pattern} (< {pattern.combinations})"
        )
    return combinadic.unrank(r, pattern.n, pattern.m)


def _read_joint(reader: BitReader, pattern: Pattern, count: int, g: int) -> list[int]:
    word = reader.read(sizes.joint_word_bits(pattern, count))
    if word >= pattern.combinations**count:
        raise FormatError(f"joint word at group {g} out of range for {count} groups of {pattern}")
    ranks = []
    for _ in range(count):
        word, r = divmod(word, pattern.combinations)
        ranks.append(r)
    return ranks


# --- K:256 outlier stream --------------------------------------------------------------


def outlier_slot_positions(real: np.ndarray, k: int) -> list[int]:
    """Spec 7.2: a block's outliers, padded with its lowest non-outlier positions up to k."""
    chosen = [j for j, v in enumerate(real) if v]
    padding = [j for j, v in enumerate(real) if not v][: k - len(chosen)]
    return sorted(chosen + padding)


def encode_outliers(
    bits: np.ndarray, real: np.ndarray, outliers: OutlierPattern, layout: str
) -> tuple[bytes, np.ndarray]:
    """Encode the outliers `real` (bool mask) of the bit-pattern array `bits`."""
    writer = BitWriter()
    values = []
    for row_bits, row_real in zip(bits, real, strict=True):
        start = 0
        for length in outliers.block_lengths(len(row_bits)):
            k = outliers.k_for(length)
            slots = outlier_slot_positions(row_real[start : start + length], k)
            values.extend(row_bits[start + j] if row_real[start + j] else 0 for j in slots)
            if layout == "rank":
                writer.write(combinadic.rank(slots), outliers.rank_bits_for(length))
            elif layout == "index":
                for j in slots:
                    writer.write(j, 8)
            else:
                raise FormatError(f"unknown outlier layout {layout!r}")
            start += length
    return writer.to_bytes(), np.array(values, dtype=bits.dtype)


def decode_outliers(
    positions: bytes,
    values: np.ndarray,
    shape: tuple[int, int],
    outliers: OutlierPattern,
    layout: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode to (flat element indices, values) of every outlier slot, in stream order."""
    rows, cols = shape
    reader = BitReader(
        positions, sizes.outlier_position_bits(shape, outliers, layout), "outlier position"
    )
    index = []
    for r in range(rows):
        start = 0
        for b, length in enumerate(outliers.block_lengths(cols)):
            k = outliers.k_for(length)
            if layout == "rank":
                rank = reader.read(outliers.rank_bits_for(length))
                if rank >= comb(length, k):
                    raise FormatError(f"outlier rank of row {r}, block {b} out of range")
                slots = combinadic.unrank(rank, k, length)
            else:
                slots = [reader.read(8) for _ in range(k)]
                if any(b2 <= a for a, b2 in zip(slots, slots[1:], strict=False)) or (
                    slots[-1] >= length
                ):
                    raise FormatError(
                        f"outlier indices {slots} of row {r}, block {b} are not increasing "
                        f"below the block length {length}"
                    )
            index.extend(r * cols + start + j for j in slots)
            start += length
    return np.array(index, dtype=np.int64), values
