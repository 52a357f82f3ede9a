"""The CUTLASS 2:4 layout against PyTorch's reference conversion, bit for bit."""

from __future__ import annotations

import zlib

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmlab.formats.cutlass import _meta_offsets, cutlass_layout, decode_cutlass, encode_cutlass
from nmlab.formats.errors import FormatError

torch = pytest.importorskip("torch")
conv = pytest.importorskip("torch.sparse._semi_structured_conversions")

BF16 = np.dtype(ml_dtypes.bfloat16)
F16, F32, I8 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.int8)
DTYPES = [F16, BF16, F32, I8]
UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32}


def bits(a: np.ndarray) -> np.ndarray:
    return a.view(UINT[a.dtype.itemsize])


def to_torch(a: np.ndarray):
    if a.dtype == BF16:
        return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(a.copy())


def from_torch(t, dtype: np.dtype) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(BF16)
    return t.numpy().astype(dtype, copy=False)


def torch_encode(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v, m = conv.sparse_semi_structured_from_dense_cutlass(to_torch(a))
    return from_torch(v, a.dtype), m.numpy()


def torch_decode(v: np.ndarray, m: np.ndarray) -> np.ndarray:
    d = conv.sparse_semi_structured_to_dense_cutlass(to_torch(v), torch.from_numpy(m.copy()))
    return from_torch(d, v.dtype)


def torch_mangles(b: np.ndarray, dtype: np.dtype, decode: bool = False) -> np.ndarray:
    """Bit patterns torch's CPU gather/scatter does not copy verbatim (NaN quieting)."""
    if dtype == F16:
        return ((b & 0x7C00) == 0x7C00) & ((b & 0x03FF) != 0) & ((b & 0x0200) == 0)  # sNaN
    if dtype == BF16:
        return ((b & 0x7F80) == 0x7F80) & ((b & 0x007F) != 0) & (b != 0xFFFF)  # NaN but 0xFFFF
    if dtype == F32 and decode:  # torch decodes float32 through a float16 view
        return torch_mangles(b & 0xFFFF, F16) | torch_mangles(b >> 16, F16)
    return np.zeros(b.shape, dtype=bool)


def random_sparse(
    rng: np.random.Generator, m: int, k: int, dtype: np.dtype, torch_safe: bool = True
) -> np.ndarray:
    """Random (m, k) matrix, 2:4 (1:2 for float32), each group holding 0..max non-zeros.

    Non-zero slots get uniformly random non-zero bit patterns (subnormals, infinities, maxima,
    NaNs, -0.0 excluded unless torch_safe is False, which also keeps torch-mangled NaNs).
    """
    g, keep = (2, 1) if dtype == F32 else (4, 2)
    u = UINT[dtype.itemsize]
    pats = rng.integers(1, np.iinfo(u).max, size=(m, k), endpoint=True, dtype=np.uint64).astype(u)
    if torch_safe:
        sign = np.array(1 << (8 * dtype.itemsize - 1), dtype=u)
        bad = (pats == sign) | torch_mangles(pats, dtype)
        pats[bad] = 1
    counts = rng.integers(0, keep, size=(m, k // g), endpoint=True)
    order = np.argsort(rng.random((m, k // g, g)), axis=-1)
    occupied = np.argsort(order, axis=-1) < counts[..., None]
    out = np.where(occupied.reshape(m, k), pats, u(0))
    return out.view(dtype)


SHAPES = {
    F16: [(32, 32), (32, 64), (64, 96), (96, 160), (128, 256), (0, 32)],
    BF16: [(32, 32), (64, 64), (32, 224), (160, 128)],
    F32: [(32, 16), (32, 48), (64, 80), (96, 128), (0, 16)],
    I8: [(16, 64), (32, 128), (48, 192), (16, 320), (0, 64)],
}
CASES = [(dt, s) for dt in DTYPES for s in SHAPES[dt]]


def assert_same(ours: tuple[np.ndarray, np.ndarray], ref: tuple[np.ndarray, np.ndarray]):
    (v, m), (tv, tm) = ours, ref
    assert v.shape == tv.shape and v.dtype == tv.dtype
    assert m.shape == tm.shape and m.dtype == tm.dtype
    np.testing.assert_array_equal(bits(v), bits(tv))
    np.testing.assert_array_equal(m, tm)


@pytest.mark.parametrize(("dtype", "shape"), CASES, ids=lambda c: str(c))
def test_encode_decode_match_torch(dtype: np.dtype, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(zlib.crc32(f"{dtype}{shape}".encode()))
    for _ in range(3):
        x = random_sparse(rng, *shape, dtype)
        ours = encode_cutlass(x)
        assert_same(ours, torch_encode(x))
        back = decode_cutlass(*ours, shape)
        assert back.dtype == x.dtype
        np.testing.assert_array_equal(bits(back), bits(x))
        if x.size == 0:  # torch's float32 to-dense cannot view an empty strided tensor
            continue
        exact = ~torch_mangles(bits(x), dtype, decode=True)
        np.testing.assert_array_equal(bits(torch_decode(*ours))[exact], bits(x)[exact])


def _shape(dtype: np.dtype) -> st.SearchStrategy[tuple[int, int]]:
    lay = cutlass_layout(dtype)
    rows = st.integers(0, 4).map(lambda i: i * lay.row_multiple)
    cols = st.integers(1, 6).map(lambda i: i * lay.col_multiple)
    return st.tuples(rows, cols)


@st.composite
def sparse_matrices(draw: st.DrawFn) -> np.ndarray:
    dtype = draw(st.sampled_from(DTYPES))
    m, k = draw(_shape(dtype))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return random_sparse(rng, m, k, dtype)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sparse_matrices())
def test_hypothesis_against_torch(x: np.ndarray) -> None:
    ours = encode_cutlass(x)
    assert_same(ours, torch_encode(x))
    np.testing.assert_array_equal(bits(decode_cutlass(*ours, x.shape)), bits(x))
    if x.size == 0:  # torch's float32 to-dense cannot view an empty strided tensor
        return
    exact = ~torch_mangles(bits(x), x.dtype, decode=True)
    tv, tm = torch_encode(x)
    np.testing.assert_array_equal(
        bits(decode_cutlass(tv, tm, x.shape))[exact], bits(torch_decode(tv, tm))[exact]
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_bit_pattern_round_trips(dtype: np.dtype) -> None:
    """All patterns incl. -0.0 and signalling NaNs survive; meta still equals torch's."""
    rng = np.random.default_rng(7)
    lay = cutlass_layout(dtype)
    x = random_sparse(rng, 2 * lay.row_multiple, 4 * lay.col_multiple, dtype, torch_safe=False)
    v, m = encode_cutlass(x)
    np.testing.assert_array_equal(bits(decode_cutlass(v, m, x.shape)), bits(x))
    if dtype != I8:
        # torch sees -0.0 as zero; give it a visible stand-in so the positions agree
        sign = 1 << (8 * dtype.itemsize - 1)
        stand_in = bits(x).copy()
        stand_in[stand_in == sign] = 1
        tv, tm = torch_encode(stand_in.view(dtype))
        np.testing.assert_array_equal(m, tm)
        tvb, vb = bits(tv), bits(v)
        keep = ~torch_mangles(vb, dtype) & (vb != sign)
        np.testing.assert_array_equal(vb[keep], tvb[keep])


def test_nibble_table_all_occupancy_masks() -> None:
    """Each of the 11 legal occupancy masks (incl. 0 and 1 non-zero) chooses torch's indices."""
    masks = [0b0000, 0b0001, 0b0010, 0b0100, 0b1000, 0b0011, 0b0101, 0b1001, 0b0110, 0b1010]
    masks.append(0b1100)
    x = np.zeros((32, 64), dtype=np.float16)
    for r in range(32):
        for grp in range(16):
            mask = masks[(r + grp) % len(masks)]
            for i in range(4):
                if mask >> i & 1:
                    x[r, 4 * grp + i] = r + grp / 16 + i / 64 + 0.5
    assert_same(encode_cutlass(x), torch_encode(x))
    expected = {0: 0b1110, 1: 0b1000, 2: 0b1001, 4: 0b1110, 8: 0b1110}
    _, meta = encode_cutlass(x)
    logical = meta.ravel()[_meta_offsets(32, 4, 2)].view(np.uint16)
    assert logical[0, 0] & 0xF == expected[masks[0]]  # row 0 group 0: empty group -> (2, 3)
    assert (logical[0, 0] >> 4) & 0xF == expected[masks[1]]  # only position 0 -> (0, 2)


@pytest.mark.parametrize("dtype", [F16, BF16, F32], ids=str)
def test_negative_zero(dtype: np.dtype) -> None:
    """Default: -0.0 is a non-zero (kept). occupancy='value' reproduces torch exactly."""
    lay = cutlass_layout(dtype)
    x = np.zeros((lay.row_multiple, lay.col_multiple), dtype=dtype)
    x[0, 0] = -0.0
    x[3, 1] = -0.0
    x[5, 4], x[5, 7] = dtype.type(2.0), -0.0
    assert_same(encode_cutlass(x, occupancy="value"), torch_encode(x))
    v, m = encode_cutlass(x)
    np.testing.assert_array_equal(bits(decode_cutlass(v, m, x.shape)), bits(x))
    assert np.signbit(v[0, 0])  # torch would store +0.0 there and lose the sign
    assert not np.signbit(torch_decode(*torch_encode(x))[0, 0])
    if dtype != F32:  # three occupied slots by bit pattern, two by value
        y = x.copy()
        y[7, 0:3] = [dtype.type(1.0), -0.0, dtype.type(3.0)]
        with pytest.raises(FormatError, match="row 7, group 0"):
            encode_cutlass(y)
        assert_same(encode_cutlass(y, occupancy="value"), torch_encode(y))


def test_worked_example_of_spec() -> None:
    """The 32x32 float16 example in spec/format.md, section 10.1.8."""
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    x = np.zeros((32, 32), dtype=np.float16)
    for r in range(32):
        for j in range(8):
            a, b = pairs[(r + j) % 6]
            x[r, 4 * j + a] = 16 * r + 2 * j + 1
            x[r, 4 * j + b] = 16 * r + 2 * j + 2
    x[0, 28:32] = [0, 15, 0, 0]
    x[1, 0:4] = 0
    v, m = encode_cutlass(x)
    assert_same((v, m), torch_encode(x))
    assert v[0].tolist() == [*range(1, 16), 0]
    assert v[1, :4].tolist() == [0, 0, 19, 20]
    hexes = [[f"{w:04X}" for w in row] for row in m.view(np.uint16)[:4]]
    assert hexes == [["9C84", "ED9C"], ["94ED", "9C84"], ["84ED", "9C84"], ["ED9C", "84ED"]]
    logical = m.ravel()[_meta_offsets(32, 2, 2)].view(np.uint16)
    assert [f"{w:04X}" for w in logical[1]] == ["D9CE", "C84E"]


def test_torch_shape_limits() -> None:
    """torch's own checks accept k % 16 (16-bit) / m % 16 (int8) but its reordering fails."""
    for shape, dtype in [((32, 16), F16), ((32, 48), BF16), ((16, 32), I8), ((32, 96), I8)]:
        x = np.zeros(shape, dtype=dtype)
        with pytest.raises(RuntimeError):
            torch_encode(x)
        with pytest.raises(FormatError, match="columns"):
            encode_cutlass(x)


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (np.zeros(64, np.float16), "2-D"),
        (np.zeros((2, 32, 32), np.float16), "2-D"),
        (np.zeros((16, 32), np.float16), "16 rows.*multiple of 32"),
        (np.zeros((8, 64), np.int8), "8 rows.*multiple of 16"),
        (np.zeros((32, 16), np.float16), "16 columns.*multiple of 32"),
        (np.zeros((32, 0), np.float16), "0 columns"),
        (np.zeros((32, 8), np.float32), "8 columns.*multiple of 16"),
        (np.zeros((16, 32), np.int8), "32 columns.*multiple of 64"),
        (np.zeros((32, 32), np.float64), "unsupported dtype float64"),
        (np.zeros((32, 32), np.int16), "unsupported dtype int16"),
        (np.zeros((32, 64), np.uint8), "unsupported dtype uint8"),
        (np.zeros((32, 32), bool), "unsupported dtype bool"),
        (np.zeros((32, 32), ">f2"), "unsupported dtype"),
        ([[0.0] * 32] * 32, "numpy array"),
    ],
)
def test_encode_rejects(x: np.ndarray, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        encode_cutlass(x)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_encode_rejects_dense_group(dtype: np.dtype) -> None:
    lay = cutlass_layout(dtype)
    x = np.zeros((lay.row_multiple, 2 * lay.col_multiple), dtype=dtype)
    g = lay.group
    x[9, 5 * g : 5 * g + g] = 1  # fully occupied group
    x[11, 0:g] = 1  # a later row: the first offending group is named
    with pytest.raises(FormatError, match=f"row 9, group 5 .*{g} non-zeros"):
        encode_cutlass(x)
    with pytest.raises(FormatError, match="occupancy"):
        encode_cutlass(x, occupancy="nope")


def _valid(dtype: np.dtype, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    return encode_cutlass(random_sparse(np.random.default_rng(1), *shape, dtype))


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda v, m, s: (v[:, :-1], m, s), "values has shape"),
        (lambda v, m, s: (v, m[:, :1], s), "meta has shape"),
        (lambda v, m, s: (v, m.reshape(-1), s), "meta has shape"),
        (lambda v, m, s: (v, m.astype(np.int32), s), "meta has dtype int32"),
        (lambda v, m, s: (v, m.astype(np.int64), s), "meta has dtype int64"),
        (lambda v, m, s: (v, m.view(np.float16), s), "meta has dtype float16"),
        (lambda v, m, s: (v.astype(np.float64), m, s), "unsupported dtype float64"),
        (lambda v, m, s: (v, m, (48, 64)), "48 rows"),
        (lambda v, m, s: (v, m, (64, 48)), "48 columns"),
        (lambda v, m, s: (v, m, (64,)), "pair of ints"),
        (lambda v, m, s: (v, m, (-32, 64)), "negative"),
        (lambda v, m, s: (v.tolist(), m, s), "numpy arrays"),
    ],
)
def test_decode_rejects(mutate, match: str) -> None:
    v, m = _valid(F16, (64, 64))
    with pytest.raises(FormatError, match=match):
        decode_cutlass(*mutate(v, m, (64, 64)))


def test_decode_accepts_unsigned_meta() -> None:
    v, m = _valid(I8, (32, 128))
    x = decode_cutlass(v, m, (32, 128))
    np.testing.assert_array_equal(decode_cutlass(v, m.view(np.uint32), (32, 128)), x)


@pytest.mark.parametrize(
    ("dtype", "nibble"),
    [(F16, 0b0000), (F16, 0b0101), (F16, 0b1111), (BF16, 0b0001), (I8, 0b0110), (I8, 0b1011)]
    + [(F32, 0b1000), (F32, 0b1001), (F32, 0b0001)],
    ids=str,
)
def test_decode_rejects_bad_nibble(dtype: np.dtype, nibble: int) -> None:
    """Equal or descending indices (and for float32 anything but 0b0100/0b1110)."""
    lay = cutlass_layout(dtype)
    shape = (2 * lay.row_multiple, 2 * lay.col_multiple)
    v, m = _valid(dtype, shape)
    r, grp = 21, 2 * lay.nibbles_per_word + 3  # second meta word of row 21, fourth nibble
    off = _meta_offsets(shape[0], m.shape[1], m.dtype.itemsize)[r, grp // lay.nibbles_per_word]
    u = m.view(UINT[m.dtype.itemsize]).ravel()
    shift = 4 * (grp % lay.nibbles_per_word)
    u[off] = (u[off] & ~np.array(0xF << shift, u.dtype)) | (nibble << shift)
    with pytest.raises(FormatError, match=f"0b{nibble:04b}.*row {r}, group {grp}"):
        decode_cutlass(v, u.view(m.dtype).reshape(m.shape), shape)
