"""Regenerate the golden vectors from the reference implementation.

Run `python spec/vectors/make_vectors.py` after a deliberate format change only;
the tests compare both implementations against the committed files, and the
hand-derived vectors of spec/format.md are checked against the text itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import ml_dtypes
import numpy as np

from nmlab.formats import FormatError, decode, encode
from nmlab.formats.dtypes import value_type

HERE = Path(__file__).parent
DTYPES = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32,
          "int8": np.int8}  # fmt: skip


def nm_sparse(
    rng: np.random.Generator, shape: tuple[int, int], n: int, m: int, dtype
) -> np.ndarray:  # noqa: ANN001
    """Random matrix with at most n occupied per group (sometimes fewer, sometimes -0.0)."""
    rows, cols = shape
    dense = rng.standard_normal(shape) * 4
    if np.dtype(dtype) == np.int8:
        dense = np.clip(np.round(dense * 8), -128, 127)
    groups = dense.reshape(rows, cols // m, m)
    keep = (
        rng.random(groups.shape).argsort(axis=2)
        < rng.integers(0, n + 1, groups.shape[:2])[..., None]
    )
    out = np.where(keep, groups, 0).reshape(shape).astype(dtype)
    if np.dtype(dtype) != np.int8:
        negzero = (out.view(value_type(np.dtype(dtype)).bits) == 0) & (rng.random(shape) < 0.02)
        out[negzero & keep.reshape(shape)] = -0.0
    return out


def vector(
    name: str,
    description: str,
    array: np.ndarray,
    pattern: str,
    layout: str = "rank",
    outliers: str | None = None,
    outlier_layout: str = "rank",
    outlier_mask: np.ndarray | None = None,
    joint_groups: int | None = None,
) -> dict:
    enc = encode(
        array,
        pattern,
        layout=layout,
        outliers=outliers,
        outlier_layout=outlier_layout,
        outlier_mask=outlier_mask,
        joint_groups=joint_groups,
        impl="reference",
    )
    assert np.array_equal(decode(enc, impl="reference").view(np.uint8), array.view(np.uint8))
    vtype = value_type(array.dtype)
    return {
        "name": name,
        "description": description,
        "dtype": vtype.name,
        "shape": list(array.shape),
        "pattern": pattern,
        "layout": layout,
        "joint_groups": enc.joint_groups,
        "outliers": outliers,
        "outlier_layout": outlier_layout if outliers else None,
        "dense_hex": array.astype(vtype.numpy.newbyteorder("<")).tobytes().hex(),
        "dense": array.astype(np.float64).tolist(),
        "outlier_mask": None if outlier_mask is None else outlier_mask.astype(int).tolist(),
        "meta_hex": enc.meta.hex(),
        "values_hex": enc.values.hex(),
        "outlier_positions_hex": enc.outliers.positions.hex() if enc.outliers else None,
        "outlier_values_hex": enc.outliers.values.hex() if enc.outliers else None,
    }


def invalid(name: str, description: str, base: dict, error: str, **changes: str) -> dict:
    """A stream a decoder MUST reject: `base` with some hex fields replaced."""
    case = {k: v for k, v in base.items() if k not in ("dense", "dense_hex", "outlier_mask")}
    case.update(changes, name=name, description=description, error=error)
    return case


def build() -> tuple[list[dict], list[dict]]:
    rng = np.random.default_rng(20261204)
    valid = []
    row = np.array([[0, 1.5, 0, -2, 3, 0, 0, 0.5]], np.float16)
    valid.append(vector("2of4_fp16_one_row", "spec 5.2 example", row, "2:4"))
    valid.append(vector("2of4_fp16_one_row_bitmask", "spec 10 example", row, "2:4", "bitmask"))
    valid.append(
        vector("2of4_fp16_one_row_positional", "spec 10 example", row, "2:4", "positional")
    )
    even = np.zeros((1, 16), np.float16)
    even[0, ::2] = np.arange(1, 9)
    valid.append(vector("8of16_fp16_even", "spec 5.2 example", even, "8:16"))
    joint = np.zeros((1, 20), np.float16)
    for g, (a, b) in enumerate([(0, 1), (0, 2), (1, 2), (0, 3), (2, 3)]):
        joint[0, 4 * g + a], joint[0, 4 * g + b] = 1, 2
    valid.append(
        vector("2of4_fp16_joint5", "spec 5.3 example", joint, "2:4", "joint", joint_groups=5)
    )
    for dtype in DTYPES:
        for pattern in ("2:4", "4:8", "8:16", "16:32", "1:4", "6:16", "3:7"):
            n, m = (int(x) for x in pattern.split(":"))
            shape = (3, m * 4)
            array = nm_sparse(rng, shape, n, m, DTYPES[dtype])
            for layout in ("rank", "bitmask", "positional", "joint"):
                name = f"{pattern.replace(':', 'of')}_{dtype}_{layout}"
                valid.append(vector(name, "random, some groups under-full", array, pattern, layout))
    for k, layout in ((4, "rank"), (8, "index"), (16, "rank"), (16, "index")):
        array = nm_sparse(rng, (2, 576), 8, 16, np.float16)
        mask = np.zeros(array.shape, bool)
        for r in range(2):
            for start, length in ((0, 256), (256, 256), (512, 64)):
                slots = min(length, -(-k * length // 256))
                cols = start + rng.choice(length, size=rng.integers(0, slots + 1), replace=False)
                mask[r, cols] = True
        array[mask] = np.float16(100.0) * np.sign(rng.standard_normal(mask.sum())).astype(
            np.float16
        )
        valid.append(vector(f"8of16_fp16_outliers_{k}of256_{layout}_tail",
                            "576 columns: two full blocks and a 64-element tail block",
                            array, "8:16", outliers=f"{k}:256", outlier_layout=layout,
                            outlier_mask=mask))  # fmt: skip
    for dtype, shape in (("float16", (32, 32)), ("bfloat16", (32, 64)), ("int8", (16, 64)),
                         ("float32", (32, 16))):  # fmt: skip
        pattern = "1:2" if dtype == "float32" else "2:4"
        array = nm_sparse(rng, shape, 1 if dtype == "float32" else 2, 2 if dtype == "float32"
                          else 4, DTYPES[dtype])  # fmt: skip
        valid.append(vector(f"cutlass_{dtype}", "NVIDIA 2:4 layout, spec 10.1", array, pattern,
                            "cutlass"))  # fmt: skip
    base = valid[0]
    bad = [
        invalid("rank_out_of_range", "2:4 group 0 holds rank 6", base, "rank", meta_hex="1e"),
        invalid(
            "truncated_values",
            "one value byte missing",
            base,
            "truncated",
            values_hex=base["values_hex"][:-2],
        ),  # fmt: skip
        invalid("trailing_meta", "an extra metadata byte", base, "trailing", meta_hex="1c00"),
        invalid("nonzero_padding", "padding bit 6 set", base, "padding", meta_hex="5c"),
        invalid("nan_value", "a NaN value", base, "non-finite", values_hex="007e00c000420038"),
        invalid(
            "bitmask_three_bits", "2:4 bitmask with 3 bits set", valid[1], "bitmask", meta_hex="9b"
        ),  # fmt: skip
        invalid("positional_descending", "positions 3, 1", valid[2], "increasing", meta_hex="c7"),
        invalid(
            "joint_word_out_of_range",
            "word 7776 = 6^5 for 5 groups",
            valid[4],
            "joint",
            meta_hex="601e",
        ),  # fmt: skip
    ]
    cut = next(v for v in valid if v["name"] == "cutlass_float16")
    zero_meta = "00" * (len(cut["meta_hex"]) // 2)
    bad.append(invalid("cutlass_equal_indices", "every nibble 0b0000 (indices 0, 0)", cut,
                       "invalid meta nibble", meta_hex=zero_meta))  # fmt: skip
    return valid, bad


def main() -> None:
    valid, bad = build()
    for name, cases in (("valid.json", valid), ("invalid.json", bad)):
        lines = ",\n".join(json.dumps(case) for case in cases)  # one vector per line
        (HERE / name).write_text(f"[\n{lines}\n]\n")
    print(f"wrote {len(valid)} valid and {len(bad)} invalid vectors")


if __name__ == "__main__":
    try:
        main()
    except FormatError as err:
        raise SystemExit(f"error: {err}") from None
