"""Golden vectors: both implementations produce the committed bytes, and reject the
committed invalid streams; the spec's worked examples are the same bytes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from nmlab.formats import FormatError, decode, encode

from .helpers import bits_of, dense_from_vector, encoded_from_vector, load_vectors

VALID = load_vectors("valid.json")
INVALID = load_vectors("invalid.json")
SPEC = (Path(__file__).resolve().parents[2] / "spec" / "format.md").read_text()


def by_name(name: str) -> dict:
    return next(v for v in VALID if v["name"] == name)


def test_there_are_enough_vectors() -> None:
    assert len(VALID) >= 100
    assert {v["dtype"] for v in VALID} == {"float16", "bfloat16", "float32", "int8"}
    assert {v["layout"] for v in VALID} >= {"rank", "joint", "bitmask", "positional"}
    assert any(v["outliers"] for v in VALID)


@pytest.mark.parametrize("impl", ["fast", "reference"])
@pytest.mark.parametrize("vector", VALID, ids=lambda v: v["name"])
def test_encoder_produces_the_golden_bytes(vector: dict, impl: str) -> None:
    dense = dense_from_vector(vector)
    mask = None if vector["outlier_mask"] is None else np.array(vector["outlier_mask"], bool)
    enc = encode(
        dense, vector["pattern"], layout=vector["layout"], outliers=vector["outliers"],
        outlier_layout=vector["outlier_layout"] or "rank", outlier_mask=mask,
        joint_groups=vector["joint_groups"], impl=impl,
    )  # fmt: skip
    assert enc == encoded_from_vector(vector)


@pytest.mark.parametrize("impl", ["fast", "reference"])
@pytest.mark.parametrize("vector", VALID, ids=lambda v: v["name"])
def test_decoder_reproduces_the_golden_input(vector: dict, impl: str) -> None:
    back = decode(encoded_from_vector(vector), impl=impl)
    assert np.array_equal(bits_of(back), bits_of(dense_from_vector(vector)))


@pytest.mark.parametrize("impl", ["fast", "reference"])
@pytest.mark.parametrize("vector", INVALID, ids=lambda v: v["name"])
def test_decoder_rejects_the_invalid_vectors(vector: dict, impl: str) -> None:
    with pytest.raises(FormatError, match=vector["error"]):
        decode(encoded_from_vector(vector), impl=impl)


def spec_bytes(label: str) -> list[str]:
    """Bold hex byte strings (**`1c`**) in the spec paragraph that names a vector."""
    start = SPEC.index(f"[`{label}")
    end = min(i for i in (SPEC.find("\n\n", start), SPEC.find("\n- ", start)) if i > 0)
    paragraph = SPEC[start:end]
    return [s.replace(" ", "") for s in re.findall(r"\*\*`([0-9a-f ]+)`\*\*", paragraph)]


def test_spec_text_examples_are_the_vector_bytes() -> None:
    one_row = by_name("2of4_fp16_one_row")
    assert spec_bytes("2of4_fp16_one_row`]") == [one_row["meta_hex"], one_row["values_hex"]]
    assert spec_bytes("8of16_fp16_even`]") == [by_name("8of16_fp16_even")["meta_hex"]]
    joint = spec_bytes("2of4_fp16_joint5`]")
    assert joint[0] == by_name("2of4_fp16_joint5")["meta_hex"] == "261c"
    assert spec_bytes("2of4_fp16_one_row`, bitmask") == [
        by_name("2of4_fp16_one_row_bitmask")["meta_hex"]
    ]
    assert spec_bytes("2of4_fp16_one_row`, positional") == [
        by_name("2of4_fp16_one_row_positional")["meta_hex"]
    ]


def test_hand_derived_bytes() -> None:
    """Derived by hand in spec 5.2, independent of the implementation."""
    one_row = by_name("2of4_fp16_one_row")
    assert one_row["meta_hex"] == f"{4 | 3 << 3:02x}" == "1c"
    assert one_row["values_hex"] == "003e00c000420038"
    assert by_name("8of16_fp16_even")["meta_hex"] == (4081).to_bytes(2, "little").hex()
    assert by_name("2of4_fp16_one_row_bitmask")["meta_hex"] == f"{0b1010 | 0b1001 << 4:02x}"
    assert (
        by_name("2of4_fp16_one_row_positional")["meta_hex"] == f"{1 | 3 << 2 | 0 << 4 | 3 << 6:02x}"
    )
