"""Fast encoder and decoder for model-sized tensors: Numba kernels and numpy.

Same bytes as :mod:`nmlab.formats.reference`, checked by the tests. Outlier
ranks need up to ~200-bit integers: their kernels use 8 limbs of 32 bits.
"""

from __future__ import annotations

import sys
from functools import cache
from math import comb

import numpy as np

from . import kernels, sizes
from .combinadic import unrank
from .errors import FormatError
from .pattern import OutlierPattern, Pattern, rank_bits

TABLE_LIMIT = 1 << 16  # rank -> positions lookup table up to this many combinations

if sys.byteorder != "little":  # pragma: no cover - every supported host is little-endian
    raise ImportError("nmlab.formats.fast assumes a little-endian host; use the reference path")


@cache
def binomial_table() -> np.ndarray:
    """binom[c, i] = C(c, i) for 0 <= c, i <= 32, as int64."""
    return np.array([[comb(c, i) for i in range(33)] for c in range(33)], dtype=np.int64)


@cache
def positions_table(m: int, n: int) -> np.ndarray:
    """Row r holds the kept positions of rank r (C(m, n) <= TABLE_LIMIT only)."""
    return np.array([unrank(r, n, m) for r in range(comb(m, n))], dtype=np.uint8)


TABLE_INDEX_BITS = 12  # small ranks (2:4: 3 bits) are looked up several groups at a time


@cache
def multi_group_table(m: int, n: int) -> tuple[int, np.ndarray, np.ndarray]:
    """(per, valid, table) for decoding `per` groups with one lookup of their raw bits."""
    width = rank_bits(m, n)
    per = max(1, TABLE_INDEX_BITS // width)
    single = positions_table(m, n)
    count = comb(m, n)
    size = 1 << (per * width)
    valid = np.ones(size, dtype=np.bool_)
    table = np.zeros((size, per * n), dtype=np.uint8)
    for index in range(size):
        for q in range(per):
            r = (index >> (q * width)) & ((1 << width) - 1)
            if r >= count:
                valid[index] = False
                break
            table[index, q * n : (q + 1) * n] = single[r] + q * m
    return per, valid, table


@cache
def binomial_limbs() -> np.ndarray:
    """limbs[c, i, q] = 32-bit limb q of C(c, i), for c <= 256 and i <= 64 (int64 storage)."""
    table = np.zeros((257, 65, kernels.LIMBS), dtype=np.int64)
    for c in range(257):
        for i in range(min(c, 64) + 1):
            value = comb(c, i)
            for q in range(kernels.LIMBS):
                table[c, i, q] = (value >> (32 * q)) & 0xFFFFFFFF
    return table


def _as_uint64_words(stream: bytes) -> np.ndarray:
    """Stream bytes padded with 16 zero bytes to whole words, viewed as uint64."""
    padded = np.zeros((len(stream) + 7) // 8 * 8 + 16, dtype=np.uint8)
    padded[: len(stream)] = np.frombuffer(stream, dtype=np.uint8)
    return padded.view("<u8")


# --- N:M main stream -------------------------------------------------------------------


@cache
def _table_run(pm: int, pn: int, exponent_mask: int):  # noqa: ANN202 - a Numba dispatcher
    return kernels.make_table_run(pm, pn, exponent_mask)


def _decode_rank_table(
    words: np.ndarray,
    n_groups: int,
    pattern: Pattern,
    values: np.ndarray,
    out: np.ndarray,
    exponent_mask: int | None,
) -> int:
    """Rank layout by table lookup, `per` groups a lookup; returns the first bad group or -1.

    Full super-groups take `per` groups a lookup; the leftover groups (n_groups % per)
    take one: with the upper fields zero, a table row describes a single group in
    its first n columns.
    """
    m, n, width = pattern.m, pattern.n, pattern.rank_bits
    per, valid, table = multi_group_table(m, n)
    full = n_groups // per
    em = exponent_mask or 0
    bad, non_finite = _table_run(per * m, per * n, em)(
        words, 0, full, per * width, valid, table, values, out
    )
    if bad >= 0:
        return bad * per + kernels.first_bad_field(
            words, bad * per * width, per, width, pattern.combinations
        )
    start = full * per
    bad, more = _table_run(m, n, em)(
        words[(start * width) >> 6 :], (start * width) & 63, n_groups - start, width, valid,
        table, values[start * n :], out[start * m :],
    )  # fmt: skip
    if bad >= 0:
        return start + bad
    if non_finite + more:
        raise FormatError(f"value: {non_finite + more} non-finite value(s) (Inf/NaN)")
    return -1


def encode_main(
    main_bits: np.ndarray, pattern: Pattern, layout: str, joint_groups: int | None = None
) -> tuple[bytes, np.ndarray]:
    m, n = pattern.m, pattern.n
    flat = np.ascontiguousarray(main_bits).reshape(-1)
    values = np.empty(flat.size // m * n + 1, dtype=flat.dtype)  # one spare, see the kernel
    masks, bad = kernels.kept_masks(flat, m, n, values)
    values = values[:-1]
    if bad >= 0:
        raise FormatError(f"group {bad} has more than {n} non-zeros for {pattern}")
    if layout == "rank":
        fields = kernels.ranks_from_masks(masks, m, binomial_table())
        widths = np.full(fields.size, pattern.rank_bits, dtype=np.int64)
    elif layout == "bitmask":
        fields = masks.astype(np.uint64)
        widths = np.full(fields.size, m, dtype=np.int64)
    elif layout == "positional":
        fields = kernels.positions_from_masks(masks, n)
        widths = np.full(fields.size, pattern.index_bits, dtype=np.int64)
    elif layout == "joint":
        if sizes.joint_word_bits(pattern, joint_groups) > sizes.MAX_JOINT_WORD_BITS:
            from . import reference

            return reference.encode_main(main_bits, pattern, layout, joint_groups)
        ranks = kernels.ranks_from_masks(masks, m, binomial_table())
        fields = kernels.joint_words(ranks, joint_groups, pattern.combinations)
        widths = np.full(fields.size, sizes.joint_word_bits(pattern, joint_groups), np.int64)
        tail = masks.size % joint_groups
        if tail:
            widths[-1] = sizes.joint_word_bits(pattern, tail)
    else:
        raise FormatError(f"unknown layout {layout!r}")
    total = sizes.meta_bits(main_bits.shape, pattern, layout, joint_groups)
    return kernels.pack_bits(fields, widths, total).tobytes(), values


def decode_main(
    meta: bytes,
    values: np.ndarray,
    shape: tuple[int, int],
    pattern: Pattern,
    layout: str,
    joint_groups: int | None = None,
    exponent_mask: int | None = None,
) -> np.ndarray:
    """Decode the N:M stream; values with an all-ones exponent field are an error."""
    m, n = pattern.m, pattern.n
    table_path = layout == "rank" and pattern.combinations <= TABLE_LIMIT
    if exponent_mask and not table_path:  # the table path counts them while scattering
        count = kernels.count_non_finite(values, exponent_mask)
        if count:
            raise FormatError(f"value: {count} non-finite value(s) (Inf/NaN)")
    n_groups = sizes.group_count(shape, pattern)
    sizes.check_bitstream(meta, sizes.meta_bits(shape, pattern, layout, joint_groups), "metadata")
    words = _as_uint64_words(meta)
    if table_path:
        out = np.empty(shape[0] * shape[1], dtype=values.dtype)  # the kernel writes every element
    else:
        out = np.zeros(shape[0] * shape[1], dtype=values.dtype)
    if layout == "rank":
        if pattern.combinations <= TABLE_LIMIT:
            bad = _decode_rank_table(words, n_groups, pattern, values, out, exponent_mask)
        else:
            bad = kernels.decode_rank_generic(
                words, n_groups, m, n, pattern.rank_bits, pattern.combinations,
                binomial_table(), values, out,
            )  # fmt: skip
        what = "rank out of range"
    elif layout == "bitmask":
        bad = kernels.decode_bitmask(words, n_groups, m, n, values, out)
        what = f"bitmask does not have exactly {n} bits set"
    elif layout == "positional":
        bad = kernels.decode_positional(words, n_groups, m, n, pattern.index_bits, values, out)
        what = "positions not strictly increasing below M"
    elif layout == "joint":
        word_bits = sizes.joint_word_bits(pattern, joint_groups)
        if word_bits > sizes.MAX_JOINT_WORD_BITS:
            from . import reference

            return reference.decode_main(
                meta, values, shape, pattern, layout, joint_groups, exponent_mask
            )
        tail_bits = sizes.joint_word_bits(pattern, n_groups % joint_groups or joint_groups)
        small = pattern.combinations <= TABLE_LIMIT
        table = positions_table(m, n) if small else np.zeros((0, n), dtype=np.uint8)
        bad = kernels.decode_joint(
            words, n_groups, m, n, joint_groups, word_bits, tail_bits, pattern.combinations,
            binomial_table(), table, values, out,
        )  # fmt: skip
        what = "joint word out of range"
    else:
        raise FormatError(f"unknown layout {layout!r}")
    if bad >= 0:
        raise FormatError(f"metadata of group {bad} is invalid for {pattern}: {what}")
    return out.reshape(shape)


# --- K:256 outlier stream --------------------------------------------------------------


def _block_views(cols: int, outliers: OutlierPattern) -> list[tuple[int, int]]:
    """(start column, length) of each block of a row."""
    starts = []
    start = 0
    for length in outliers.block_lengths(cols):
        starts.append((start, length))
        start += length
    return starts


def _slot_positions(real: np.ndarray, k: int) -> np.ndarray:
    """[blocks, L] bool outliers -> [blocks, k] sorted slot positions (spec 7.2 padding)."""
    free = ~real
    need = k - np.count_nonzero(real, axis=1)
    padding = free & (np.cumsum(free, axis=1) <= need[:, None])
    slots = real | padding
    return np.nonzero(slots)[1].reshape(-1, k)


def encode_outliers(
    bits: np.ndarray, real: np.ndarray, outliers: OutlierPattern, layout: str
) -> tuple[bytes, np.ndarray]:
    rows, cols = bits.shape
    per_block_positions = []  # list over block columns of [rows, k] arrays
    per_block_values = []
    for start, length in _block_views(cols, outliers):
        k = outliers.k_for(length)
        slots = _slot_positions(real[:, start : start + length], k)
        take = np.take_along_axis(bits[:, start : start + length], slots, axis=1)
        keep = np.take_along_axis(real[:, start : start + length], slots, axis=1)
        per_block_positions.append(slots)
        per_block_values.append(np.where(keep, take, bits.dtype.type(0)))
    values = np.concatenate(per_block_values, axis=1).reshape(-1)
    slots = np.ascontiguousarray(np.concatenate(per_block_positions, axis=1), dtype=np.int64)
    blocks = _block_views(cols, outliers)
    ks = np.array([outliers.k_for(length) for _, length in blocks], dtype=np.int64)
    total = sizes.outlier_position_bits((rows, cols), outliers, layout)
    if layout == "index":
        fields = slots.astype(np.uint64).reshape(-1)
        widths = np.full(fields.size, 8, dtype=np.int64)
    elif layout == "rank":
        rank_widths = np.array([outliers.rank_bits_for(length) for _, length in blocks], np.int64)
        chunks = rows * int(sum((w + 31) // 32 for w in rank_widths))
        fields = np.zeros(chunks, dtype=np.uint64)
        widths = np.zeros(chunks, dtype=np.int64)
        kernels.outlier_ranks_encode(slots, ks, rank_widths, binomial_limbs(), fields, widths)
    else:
        raise FormatError(f"unknown outlier layout {layout!r}")
    stream = kernels.pack_bits(fields, widths, total).tobytes()
    return stream, values


def decode_outliers(
    positions: bytes,
    values: np.ndarray,
    shape: tuple[int, int],
    outliers: OutlierPattern,
    layout: str,
) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = shape
    total = sizes.outlier_position_bits(shape, outliers, layout)
    sizes.check_bitstream(positions, total, "outlier position")
    blocks = _block_views(cols, outliers)
    per_block = []  # [rows, k] absolute column indices
    if layout == "index":
        raw = np.frombuffer(positions, dtype=np.uint8).astype(np.int64)
        slots_per_row = sum(outliers.k_for(length) for _, length in blocks)
        raw = raw.reshape(rows, slots_per_row)
        col = 0
        for b, (start, length) in enumerate(blocks):
            k = outliers.k_for(length)
            idx = raw[:, col : col + k]
            bad = np.flatnonzero((np.diff(idx, axis=1) <= 0).any(axis=1) | (idx[:, -1] >= length))
            if len(bad):
                raise FormatError(
                    f"outlier indices of row {bad[0]}, block {b} are not strictly increasing "
                    f"below the block length {length}"
                )
            per_block.append(start + idx)
            col += k
    else:
        lengths = np.array([length for _, length in blocks], dtype=np.int64)
        ks = np.array([outliers.k_for(length) for length in lengths], dtype=np.int64)
        widths = np.array([outliers.rank_bits_for(length) for length in lengths], np.int64)
        index = np.empty(rows * int(ks.sum()), dtype=np.int64)
        bad_row, bad_block = kernels.outlier_ranks_decode(
            _as_uint64_words(positions), rows, lengths, ks, widths, binomial_limbs(), index, cols
        )
        if bad_row >= 0:
            raise FormatError(f"outlier rank of row {bad_row}, block {bad_block} out of range")
        return index, values
    index = np.concatenate(per_block, axis=1) + (np.arange(rows) * cols)[:, None]
    return index.reshape(-1), values
