"""Bad input of every kind gives one clear FormatError; a fuzzer finds nothing else."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmlab.formats import FormatError, decode, encode, load, save
from nmlab.formats.container import HEADER_KEY
from nmlab.formats.encoded import EncodedTensor

from .helpers import bits_of, random_nm


def good() -> tuple[np.ndarray, EncodedTensor]:
    array = random_nm(np.random.default_rng(3), 4, 64, 2, 4, np.float16)
    return array, encode(array, "2:4")


def replace(enc: EncodedTensor, **changes) -> EncodedTensor:  # noqa: ANN003
    fields = {**enc.__dict__, **changes}
    return EncodedTensor(**fields)


def test_pattern_violation_names_the_first_offending_group() -> None:
    array = np.zeros((3, 16), np.float32)
    array[2, 4:7] = 1.0  # row 2, group 1 holds three non-zeros
    with pytest.raises(FormatError, match=r"row 2, group 1 \(columns 4\.\.7\) has 3 non-zeros"):
        encode(array, "2:4")


@pytest.mark.parametrize(
    ("array", "pattern", "message"),
    [
        (np.zeros((2, 6), np.float16), "2:4", "not a multiple of M=4"),
        (np.zeros((2, 3, 4), np.float16), "2:4", "2-D"),
        (np.zeros((0, 4), np.float16), "2:4", "at least one row"),
        (np.zeros((2, 4), np.float64), "2:4", "unsupported dtype"),
        (np.zeros((2, 4), np.float16), "4:4", "N must satisfy"),
        (np.zeros((2, 64), np.float16), "8:64", "M must be"),
        (np.zeros((2, 4), np.float16), "2-4", "expected N:M"),
        (np.array([[np.nan, 0, 0, 0]], np.float16), "2:4", "non-finite"),
        (np.array([[np.inf, 0, 0, 0]], np.float32), "2:4", "non-finite"),
    ],
)
def test_encoder_rejects_bad_arrays(array: np.ndarray, pattern: str, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        encode(array, pattern)


def test_encoder_rejects_bad_options() -> None:
    array = np.zeros((2, 512), np.float16)
    with pytest.raises(FormatError, match="unknown layout"):
        encode(array, "2:4", layout="zigzag")
    with pytest.raises(FormatError, match="K must be"):
        encode(array, "2:4", outliers="65:256")
    with pytest.raises(FormatError, match="block must be 256"):
        encode(array, "2:4", outliers="4:128")
    with pytest.raises(FormatError, match="outlier layout"):
        encode(array, "2:4", outliers="4:256", outlier_layout="bits")
    with pytest.raises(FormatError, match="without an outlier pattern"):
        encode(array, "2:4", outlier_mask=np.zeros((2, 512), bool))
    mask = np.zeros((2, 512), bool)
    mask[1, 256:261] = True
    array[1, 256:261] = 1
    with pytest.raises(FormatError, match=r"row 1, block 1 \(columns 256\.\.511\) has 5 outliers"):
        encode(array, "2:4", outliers="4:256", outlier_mask=mask)


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_decoder_rejects_malformed_streams(impl: str) -> None:
    _, enc = good()
    cases = {
        "truncated": replace(enc, meta=enc.meta[:-1]),
        "trailing": replace(enc, meta=enc.meta + b"\0"),
        "truncated value": replace(enc, values=enc.values[:-3]),
        "trailing bytes": replace(enc, values=enc.values + b"\0\0"),
        "rank 7 out of range": replace(enc, meta=b"\x07" + enc.meta[1:]),
        "wrong shape": replace(enc, shape=(4, 60)),
        "non-finite": replace(enc, values=b"\x00\x7c" + enc.values[2:]),
        "unknown layout": replace(enc, layout="zigzag"),
        "unsupported dtype": replace(enc, dtype="float64"),
    }
    for what, bad in cases.items():
        with pytest.raises(FormatError) as info:
            decode(bad, impl=impl)
        assert "\n" not in str(info.value), what


def test_rank_out_of_range_names_the_group() -> None:
    _, enc = good()
    meta = bytearray(enc.meta)
    meta[0] = (meta[0] & ~0b111) | 0b110  # group 0 -> rank 6
    with pytest.raises(FormatError, match="group 0"):
        decode(replace(enc, meta=bytes(meta)))


def test_outlier_overlapping_a_value_is_rejected() -> None:
    array = np.zeros((1, 256), np.float32)
    array[0, 0], array[0, 1] = 1.0, 2.0
    mask = np.zeros((1, 256), bool)
    mask[0, 1] = True
    enc = encode(array, "2:4", outliers="1:256", outlier_mask=mask)
    # move the outlier slot onto column 0, which the N:M stream already fills
    positions = (0).to_bytes(1, "little")
    bad = replace(enc, outliers=enc.outliers.__class__(enc.outliers.pattern, "index", positions,
                                                       enc.outliers.values))  # fmt: skip
    with pytest.raises(FormatError, match="overlaps"):
        decode(bad)


def write_container(tmp_path, header_change=None):  # noqa: ANN001, ANN201
    array, enc = good()
    path = tmp_path / "c.safetensors"
    save(path, {"w": enc})
    if header_change is not None:
        data = path.read_bytes()
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
        inner = json.loads(header["__metadata__"][HEADER_KEY])
        header_change(inner)
        header["__metadata__"][HEADER_KEY] = json.dumps(inner)
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])
    return array, path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h: h.update(version="2.0"), "unsupported format version"),
        (lambda h: h.update(format="other"), "wrong header"),
        (lambda h: h["tensors"]["w"]["crc32"].update(meta="00000000"), "checksum mismatch"),
        (lambda h: h["tensors"]["w"].update(shape=[4, 65]), "not a multiple"),
        (lambda h: h["tensors"]["w"].update(shape=[5, 64]), "truncated"),
        (lambda h: h["tensors"]["w"].update(shape="4x64"), "shape"),
        (lambda h: h["tensors"]["w"].update(dtype_code=3), "dtype code"),
        (lambda h: h["tensors"]["w"].update(crc32=[]), "malformed header"),
    ],
)
def test_container_header_errors(tmp_path, change, message: str) -> None:  # noqa: ANN001
    _, path = write_container(tmp_path, change)
    with pytest.raises(FormatError, match=message):
        for enc in load(path).values():
            decode(enc)


def test_not_a_container(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"garbage")
    with pytest.raises(FormatError, match="not a valid safetensors"):
        load(path)
    with pytest.raises(FormatError, match="no such file"):
        load(tmp_path / "missing.safetensors")
    from safetensors.numpy import save_file

    save_file({"a": np.zeros(3, np.uint8)}, str(path))
    with pytest.raises(FormatError, match="not an nmlab container"):
        load(path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(data=st.data())
def test_fuzzed_containers_fail_cleanly_or_decode_correctly(tmp_path, data) -> None:  # noqa: ANN001
    rng = np.random.default_rng(5)
    array = random_nm(rng, 3, 576, 8, 16, np.float16)
    cutlass_array = random_nm(rng, 32, 64, 2, 4, np.float16)
    path = tmp_path / "f.safetensors"
    if not path.exists():
        save(path, {"a": encode(array, "8:16", outliers="16:256"),
                    "b": encode(array, "8:16", layout="joint", outliers="4:256",
                                outlier_layout="index"),
                    "c": encode(cutlass_array, "2:4", layout="cutlass")})  # fmt: skip
    original = path.read_bytes()
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 3))):
        kind = data.draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        pos = data.draw(st.integers(0, len(mutated) - 1))
        if kind == "flip":
            mutated[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set":
            mutated[pos] = data.draw(st.integers(0, 255))
        elif kind == "truncate":
            del mutated[pos:]
        elif kind == "insert":
            mutated[pos:pos] = bytes([data.draw(st.integers(0, 255))])
        elif kind == "delete" and len(mutated) > 1:
            del mutated[pos]
        if not mutated:
            mutated = bytearray(b"\0")
    bad = tmp_path / "m.safetensors"
    bad.write_bytes(bytes(mutated))
    try:
        tensors = load(bad)
        decoded = {name: decode(enc) for name, enc in tensors.items()}
    except FormatError:
        return
    originals = {"a": array, "b": array, "c": cutlass_array}
    for name, back in decoded.items():  # no error: it must be exactly the original
        assert np.array_equal(bits_of(back), bits_of(originals[name]))
