"""NVIDIA 2:4 semi-structured sparsity in the CUTLASS layout, bit-exact with PyTorch.

Pure numpy re-implementation of the layout produced by
``torch.sparse._semi_structured_conversions.sparse_semi_structured_from_dense_cutlass`` and
read by ``sparse_semi_structured_to_dense_cutlass`` (see spec/format.md section 10.1).

Layout summary (m x k dense matrix):

* values: (m, k/2), same dtype as the input; the kept elements of each group in index order.
* meta: (m, k/16) int16 for float16/bfloat16, (m, k/8) int16 for float32, (m, k/32) int32 for
  int8. One 4-bit nibble per group of 4 elements (for float32: per pair of elements, viewed as
  4 half-words); nibble j of a meta row sits at bits 4j..4j+3 of word j // (bits/4). The words
  are then scattered by the CUTLASS ColumnMajorInterleaved<2> reordering (``_meta_offsets``).

"Non-zero" defaults to the bit pattern (``occupancy="bits"``): -0.0 is an occupied slot, so
``decode(encode(x))`` is bit-exact for every input. PyTorch compares by value (``x != 0``), so
for inputs that contain -0.0 its output can differ; ``occupancy="value"`` reproduces it exactly.
Values are copied as bit patterns (torch's CPU gather/scatter quiets some NaNs; see the spec).
Group words and meta words are assembled through integer views, assuming a little-endian host.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import ml_dtypes
import numpy as np

from .errors import FormatError
from .sizes import check_length

__all__ = ["encode_cutlass", "decode_cutlass", "cutlass_layout", "CutlassLayout"]


@dataclass(frozen=True)
class CutlassLayout:
    """Per-dtype parameters of the layout."""

    name: str
    group: int  # elements per metadata nibble: 4 (2:4), or 2 for float32 (1:2 pairs)
    bits_dtype: np.dtype  # unsigned int of the element width: occupancy test on bit patterns
    unit_dtype: np.dtype  # what one 2-bit index addresses: the element, or a float32 half-word
    meta_dtype: np.dtype  # int16 or int32, as torch returns it
    row_multiple: int  # m must be a multiple of this
    col_multiple: int  # k must be a positive multiple of this

    @property
    def word_dtype(self) -> np.dtype:
        """Unsigned int holding the 4 units of one group."""
        return np.dtype(f"u{4 * self.unit_dtype.itemsize}")

    @property
    def pair_dtype(self) -> np.dtype:
        """Unsigned int holding the 2 kept units of one group."""
        return np.dtype(f"u{2 * self.unit_dtype.itemsize}")

    @property
    def nibbles_per_word(self) -> int:
        return self.meta_dtype.itemsize * 2

    @property
    def cols_per_word(self) -> int:
        return self.nibbles_per_word * self.group


def _layout(
    name: str, group: int, bits: type, unit: type, meta: type, rows: int, cols: int
) -> CutlassLayout:
    dt = np.dtype
    return CutlassLayout(name, group, dt(bits), dt(unit), dt(meta), rows, cols)


# Column multiples are torch's *effective* constraints: torch checks k % 16 (16-bit) and
# k % 32 (int8), but its meta reordering swaps 2x2 blocks of meta words and indexes out of
# bounds when the number of meta columns is odd, so it only succeeds for k % 32 / k % 64.
_LAYOUTS: dict[np.dtype, CutlassLayout] = {
    np.dtype(np.float16): _layout("float16", 4, np.uint16, np.uint16, np.int16, 32, 32),
    np.dtype(ml_dtypes.bfloat16): _layout("bfloat16", 4, np.uint16, np.uint16, np.int16, 32, 32),
    np.dtype(np.float32): _layout("float32", 2, np.uint32, np.uint16, np.int16, 32, 16),
    np.dtype(np.int8): _layout("int8", 4, np.uint8, np.uint8, np.int32, 16, 64),
}
_SUPPORTED = ", ".join(lay.name for lay in _LAYOUTS.values())


def cutlass_layout(dtype: np.dtype | type) -> CutlassLayout:
    """Layout parameters for a value dtype; FormatError if the dtype is not supported."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise FormatError(f"unsupported dtype {dtype!r}; supported: {_SUPPORTED}") from None
    lay = _LAYOUTS.get(dt)
    if lay is None or not dt.isnative:
        raise FormatError(f"unsupported dtype {dt}; supported: {_SUPPORTED} (native byte order)")
    return lay


# --- nibble tables -------------------------------------------------------------------------
# A nibble is idx0 | idx1 << 2 with idx0 < idx1 the two selected positions in the group of 4.
# Keyed by the occupancy mask (bit i set when position i is non-zero).  Masks with 2 bits set
# encode those two positions.  Degenerate masks follow torch's (Espresso-minimised) choice:
# the occupied slot, if any, is kept and padded with a free slot.
_NIBBLE_OF_MASK = np.zeros(16, dtype=np.uint8)
for _mask in range(16):
    _pos = [i for i in range(4) if _mask >> i & 1]
    if len(_pos) == 2:
        _NIBBLE_OF_MASK[_mask] = _pos[0] | _pos[1] << 2
_NIBBLE_OF_MASK[0b0000] = 0b1110  # (2, 3)
_NIBBLE_OF_MASK[0b0001] = 0b1000  # only 0 -> (0, 2)
_NIBBLE_OF_MASK[0b0010] = 0b1001  # only 1 -> (1, 2)
_NIBBLE_OF_MASK[0b0100] = 0b1110  # only 2 -> (2, 3)
_NIBBLE_OF_MASK[0b1000] = 0b1110  # only 3 -> (2, 3)
_POPCOUNT4 = np.array([bin(i).count("1") for i in range(16)], dtype=np.uint8)

# Nibbles accepted by decode: the six ascending pairs (all torch ever produces; PTX calls
# equal-index nibbles invalid and ordered-metadata MMAs need ascending indices).  float32 pairs
# are stored as half-word positions, so only (0,1) = first float and (2,3) = second float.
_VALID_NIBBLE_4 = np.zeros(16, dtype=bool)
_VALID_NIBBLE_4[[0b0100, 0b1000, 0b1100, 0b1001, 0b1101, 0b1110]] = True
_VALID_NIBBLE_2 = np.zeros(16, dtype=bool)
_VALID_NIBBLE_2[[0b0100, 0b1110]] = True
_NIBBLE_KEEP_FIRST = 0b0100  # float32: keep element 0 (half-words 0 and 1)
_NIBBLE_KEEP_SECOND = 0b1110  # float32: keep element 1 (half-words 2 and 3)

# Bit shift, inside a group word, of the unit named by a nibble's low / high index, for unit
# widths of 8 and 16 bits; the table dtype is the group word's (uint32 / uint64).
_SHIFT_LO = {ub: ((np.arange(16) & 3) * ub).astype(f"u{ub // 2}") for ub in (8, 16)}
_SHIFT_HI = {ub: ((np.arange(16) >> 2) * ub).astype(f"u{ub // 2}") for ub in (8, 16)}


@lru_cache(maxsize=8)
def _meta_offsets(m: int, ncols: int, meta_itemsize: int) -> np.ndarray:
    """Flat destination, in the returned meta array, of logical meta word (r, c), shape (m, ncols).

    1. Rows are permuted inside bands of 32 (int16) / 16 (int32) rows:
       r = band + 8a + b  ->  d = band + I*b + a   (I = 4 for int16, 2 for int32).
    2. Each 2x2 block of (d, c) is transposed: the low bits of d and c are exchanged.
    3. The result is stored ColumnMajorInterleaved<2>: column pairs are major, then rows, then
       the two columns of the pair.
    """
    band, weave = (32, 4) if meta_itemsize == 2 else (16, 2)
    r = np.arange(m, dtype=np.int64)[:, None]
    c = np.arange(ncols, dtype=np.int64)[None, :]
    d = r - r % band + (r % 8) * weave + (r % band) // 8
    row = (d & ~1) | (c & 1)  # step 2: row low bit <- column low bit
    col_lo = d & 1  # step 2: column low bit <- row low bit
    off = (c >> 1) * (2 * m) + row * 2 + col_lo
    off = np.ascontiguousarray(off.reshape(m, ncols))
    off.flags.writeable = False
    return off


def _check_shape(m: int, k: int, lay: CutlassLayout, what: str) -> None:
    if m % lay.row_multiple != 0:
        raise FormatError(
            f"{what} has {m} rows; the CUTLASS {lay.name} layout needs a multiple of "
            f"{lay.row_multiple}"
        )
    if k <= 0 or k % lay.col_multiple != 0:
        raise FormatError(
            f"{what} has {k} columns; the CUTLASS {lay.name} layout needs a positive multiple "
            f"of {lay.col_multiple}"
        )


def _pack_words(nibbles: np.ndarray, lay: CutlassLayout) -> np.ndarray:
    """(m, groups) nibbles -> (m, ncols) meta words; nibble j of a row at bits 4*(j % per_word)."""
    m, groups = nibbles.shape
    pairs = nibbles.reshape(m, groups // 2, 2)
    octets = pairs[..., 0] | (pairs[..., 1] << 4)  # even nibble low, odd nibble high
    return np.ascontiguousarray(octets).view(lay.meta_dtype)  # little-endian: octet 0 lowest


def _unpack_words(words: np.ndarray) -> np.ndarray:
    """(m, ncols) meta words -> (m, groups) nibbles, inverse of ``_pack_words``."""
    octets = np.ascontiguousarray(words).view(np.uint8)
    m, n = octets.shape
    return np.stack((octets & 0xF, octets >> 4), axis=-1).reshape(m, 2 * n)


def _mask_of(occ: np.ndarray) -> np.ndarray:
    """(m, groups, g) bool -> (m, groups) uint8 with bit i set when position i is occupied.

    The g booleans of a group are bytes 0/1 of one uint32 (g=4) or uint16 (g=2) word; shifting
    byte i (at bit 8i) right by 7i brings its flag to bit i (np.packbits is ~10x slower here).
    """
    m, groups, g = occ.shape
    x = np.ascontiguousarray(occ).view(np.uint32 if g == 4 else np.uint16).reshape(m, groups)
    if g == 4:
        x = x | (x >> 7) | (x >> 14) | (x >> 21)
    else:
        x = x | (x >> 7)
    return (x & ((1 << g) - 1)).astype(np.uint8)


def _unit_view(a: np.ndarray, lay: CutlassLayout) -> tuple[np.ndarray, np.ndarray]:
    """Bit views of a contiguous 2-D array: (units, group words).

    A "unit" is what a 2-bit index addresses: one element, or for float32 one half-word (torch
    treats a float32 pair as four half-words).  A group word packs the 4 units of a group with
    unit i at bits unit_bits*i (little-endian host, as numpy on every supported platform).
    """
    units = np.ascontiguousarray(a).view(lay.unit_dtype)
    return units, units.view(lay.word_dtype)


def encode_cutlass(dense: np.ndarray, *, occupancy: str = "bits") -> tuple[np.ndarray, np.ndarray]:
    """Compress a 2:4-sparse (m, k) matrix into torch/CUTLASS ``(values, meta)``.

    ``occupancy="bits"`` (default): an element is non-zero when its bit pattern is not all
    zeros (-0.0 is kept). ``occupancy="value"``: ``x != 0`` as torch does (-0.0 and +0.0 are
    both zero), which reproduces torch bit for bit also on inputs containing -0.0.
    float32 follows torch's 1:2 rule: at most one non-zero per pair of elements.
    """
    if occupancy not in ("bits", "value"):
        raise FormatError(f"occupancy must be 'bits' or 'value', got {occupancy!r}")
    if not isinstance(dense, np.ndarray):
        raise FormatError(f"dense must be a numpy array, got {type(dense).__name__}")
    if dense.ndim != 2:
        raise FormatError(f"dense must be 2-D, got {dense.ndim}-D shape {dense.shape}")
    lay = cutlass_layout(dense.dtype)
    m, k = dense.shape
    _check_shape(m, k, lay, f"dense matrix {m}x{k}")

    dense = np.ascontiguousarray(dense)
    g = lay.group
    groups = k // g
    if occupancy == "bits":
        occ = dense.view(lay.bits_dtype).reshape(m, groups, g) != 0
    else:
        occ = dense.reshape(m, groups, g) != 0
    mask = _mask_of(occ)

    if g == 4:
        over = _POPCOUNT4[mask] > 2
        limit = "2:4 sparsity allows at most 2"
        nibbles = _NIBBLE_OF_MASK[mask]
    else:
        over = mask == 0b11
        limit = "float32 uses 1:2 sparsity (at most 1 per pair)"
        nibbles = np.where(mask == 0b01, _NIBBLE_KEEP_FIRST, _NIBBLE_KEEP_SECOND).astype(np.uint8)
    if over.any():
        r, grp = divmod(int(np.flatnonzero(over)[0]), groups)
        n = int(_POPCOUNT4[mask[r, grp]])
        raise FormatError(
            f"row {r}, group {grp} (columns {g * grp}..{g * grp + g - 1}) has {n} non-zeros; "
            + limit
        )

    _, words = _unit_view(dense, lay)
    ub = lay.unit_dtype.itemsize * 8
    lo = (words >> _SHIFT_LO[ub][nibbles]) & lay.word_dtype.type((1 << ub) - 1)
    hi = (words >> _SHIFT_HI[ub][nibbles]) & lay.word_dtype.type((1 << ub) - 1)
    kept = (lo | (hi << lay.word_dtype.type(ub))).astype(lay.pair_dtype)
    values = kept.view(dense.dtype).reshape(m, k // 2)

    meta_words = _pack_words(nibbles, lay)
    ncols = meta_words.shape[1]
    meta = np.empty(m * ncols, dtype=lay.meta_dtype)
    meta[_meta_offsets(m, ncols, lay.meta_dtype.itemsize).ravel()] = meta_words.ravel()
    return values, meta.reshape(m, ncols)


def decode_cutlass(values: np.ndarray, meta: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Rebuild the dense (m, k) matrix from torch/CUTLASS ``(values, meta)``.

    Empty positions become all-zero bit patterns. Each nibble must name two distinct positions
    in ascending order (for float32: 0b0100 or 0b1110), which is all torch ever produces.
    Unlike torch (whose scatter quiets signalling NaNs and canonicalises bfloat16 NaNs), every
    value's bits are preserved.
    """
    try:
        m, k = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise FormatError(f"shape must be a pair of ints (m, k), got {shape!r}") from None
    if m < 0:
        raise FormatError(f"shape {(m, k)} has a negative row count")
    if not isinstance(values, np.ndarray) or not isinstance(meta, np.ndarray):
        raise FormatError("values and meta must be numpy arrays")
    lay = cutlass_layout(values.dtype)
    _check_shape(m, k, lay, f"shape {m}x{k}")
    if values.shape != (m, k // 2):
        raise FormatError(
            f"values has shape {values.shape}; a {m}x{k} {lay.name} matrix needs {(m, k // 2)}"
        )
    ncols = k // lay.cols_per_word
    width = lay.meta_dtype.itemsize
    if meta.dtype.kind not in "iu" or meta.dtype.itemsize != width or not meta.dtype.isnative:
        raise FormatError(
            f"meta has dtype {meta.dtype}; {lay.name} values need {lay.meta_dtype} meta words"
        )
    if meta.shape != (m, ncols):
        raise FormatError(
            f"meta has shape {meta.shape}; a {m}x{k} {lay.name} matrix needs {(m, ncols)}"
        )

    flat = np.ascontiguousarray(meta).view(lay.meta_dtype).ravel()
    nibbles = _unpack_words(flat[_meta_offsets(m, ncols, width)])
    groups = k // lay.group
    valid = _VALID_NIBBLE_4 if lay.group == 4 else _VALID_NIBBLE_2
    bad = ~valid[nibbles]
    if bad.any():
        r, grp = divmod(int(np.flatnonzero(bad)[0]), groups)
        nib = int(nibbles[r, grp])
        allowed = "two distinct ascending indices" if lay.group == 4 else "0b0100 or 0b1110"
        raise FormatError(
            f"invalid meta nibble 0b{nib:04b} (indices {nib & 3}, {nib >> 2}) for row {r}, "
            f"group {grp}; {lay.name} needs {allowed}"
        )

    ub = lay.unit_dtype.itemsize * 8
    pairs = np.ascontiguousarray(values).view(lay.pair_dtype).reshape(m, groups)
    lo = (pairs & lay.pair_dtype.type((1 << ub) - 1)).astype(lay.word_dtype)
    hi = (pairs >> lay.pair_dtype.type(ub)).astype(lay.word_dtype)
    words = (lo << _SHIFT_LO[ub][nibbles]) | (hi << _SHIFT_HI[ub][nibbles])
    return words.view(values.dtype).reshape(m, k)


# --- container streams (spec/format.md 10.1) ------------------------------------------------


def cutlass_pattern(dtype: np.dtype | type) -> str:
    """The N:M pattern the layout implements for a dtype: 2:4, or 1:2 pairs for float32."""
    return "2:4" if cutlass_layout(dtype).group == 4 else "1:2"


def encode_stream(main: np.ndarray) -> tuple[bytes, np.ndarray]:
    """(meta stream bytes, value bit patterns) of a matrix that satisfies the pattern."""
    values, meta = encode_cutlass(main)
    bits = values.view(cutlass_layout(main.dtype).bits_dtype).reshape(-1)
    return meta.astype(meta.dtype.newbyteorder("<")).tobytes(), bits


def decode_stream(
    meta: bytes, values: bytes, shape: tuple[int, int], dtype: np.dtype
) -> np.ndarray:
    """Dense matrix from the container streams; exact stream lengths are checked first."""
    lay = cutlass_layout(dtype)
    m, k = shape
    _check_shape(m, k, lay, f"shape {m}x{k}")
    ncols = k // lay.cols_per_word
    for what, data, expected in (
        ("value", values, m * (k // 2) * lay.bits_dtype.itemsize),
        ("metadata", meta, m * ncols * lay.meta_dtype.itemsize),
    ):
        check_length(data, expected, what)
    value_array = np.frombuffer(values, dtype=np.dtype(dtype).newbyteorder("<")).reshape(m, -1)
    meta_array = np.frombuffer(meta, dtype=lay.meta_dtype.newbyteorder("<")).reshape(m, ncols)
    return decode_cutlass(value_array, meta_array, (m, k))
