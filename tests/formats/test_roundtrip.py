"""Hypothesis round trips: every layout, dtype and pattern; fast bytes == reference bytes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmlab.formats import FormatError, decode, encode, load, save
from nmlab.formats.pattern import OutlierPattern
from nmlab.formats.sizes import byte_length, meta_bits, outlier_position_bits, outlier_slots

from .helpers import DTYPES, bits_of, random_nm

LAYOUTS = ["rank", "joint", "bitmask", "positional"]


@st.composite
def cases(draw: st.DrawFn) -> dict:
    m = draw(st.integers(2, 32))
    n = draw(st.integers(1, m - 1))
    rows = draw(st.integers(1, 5))
    groups = draw(st.integers(1, 6))
    return {
        "n": n,
        "m": m,
        "rows": rows,
        "cols": m * groups,
        "dtype": draw(st.sampled_from(sorted(DTYPES))),
        "layout": draw(st.sampled_from(LAYOUTS)),
        "joint_groups": draw(st.none() | st.integers(1, 9)),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_round_trip_is_bit_exact_and_both_paths_agree(case: dict) -> None:
    rng = np.random.default_rng(case["seed"])
    array = random_nm(rng, case["rows"], case["cols"], case["n"], case["m"], DTYPES[case["dtype"]])
    pattern = f"{case['n']}:{case['m']}"
    joint = case["joint_groups"] if case["layout"] == "joint" else None
    fast = encode(array, pattern, layout=case["layout"], joint_groups=joint)
    ref = encode(array, pattern, layout=case["layout"], joint_groups=joint, impl="reference")
    assert fast == ref
    for impl in ("fast", "reference"):
        back = decode(fast, impl=impl)
        assert back.dtype == array.dtype and back.shape == array.shape
        assert np.array_equal(bits_of(back), bits_of(array))
    # sizes equal the spec's arithmetic
    assert len(fast.meta) == byte_length(
        meta_bits(array.shape, fast.pattern, fast.layout, fast.joint_groups)
    )
    assert len(fast.values) == array.size // case["m"] * case["n"] * array.itemsize


@st.composite
def outlier_cases(draw: st.DrawFn) -> dict:
    m = draw(st.sampled_from([4, 8, 16, 32]))
    n = draw(st.integers(1, m - 1))
    return {
        "n": n,
        "m": m,
        "k": draw(st.integers(1, 64)),
        "rows": draw(st.integers(1, 3)),
        "cols": m * draw(st.integers(1, 700 // m)),
        "dtype": draw(st.sampled_from(sorted(DTYPES))),
        "layout": draw(st.sampled_from(["rank", "index"])),
        "main_layout": draw(st.sampled_from(LAYOUTS)),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(outlier_cases())
def test_outlier_round_trip_with_explicit_mask(case: dict) -> None:
    rng = np.random.default_rng(case["seed"])
    rows, cols, k = case["rows"], case["cols"], case["k"]
    dtype = DTYPES[case["dtype"]]
    main = random_nm(rng, rows, cols, case["n"], case["m"], dtype)
    outliers = OutlierPattern(k)
    mask = np.zeros((rows, cols), bool)
    start = 0
    for length in outliers.block_lengths(cols):
        for r in range(rows):
            count = rng.integers(0, outliers.k_for(length) + 1)
            mask[r, start + rng.choice(length, size=count, replace=False)] = True
        start += length
    big = np.asarray(rng.choice([-100, 100], size=(rows, cols)), dtype=dtype)
    array = np.where(mask, big, main).astype(dtype)
    kwargs = {"outliers": f"{k}:256", "outlier_layout": case["layout"], "outlier_mask": mask,
              "layout": case["main_layout"]}  # fmt: skip
    fast = encode(array, f"{case['n']}:{case['m']}", **kwargs)
    assert fast == encode(array, f"{case['n']}:{case['m']}", impl="reference", **kwargs)
    for impl in ("fast", "reference"):
        assert np.array_equal(bits_of(decode(fast, impl=impl)), bits_of(array))
    shape = (rows, cols)
    assert len(fast.outliers.positions) == byte_length(
        outlier_position_bits(shape, outliers, case["layout"])
    )
    assert len(fast.outliers.values) == outlier_slots(shape, outliers) * array.itemsize


def test_default_split_takes_each_groups_excess_largest_first() -> None:
    row = np.array([[0.5, -7.0, 3.0, 0, 0, 0, 0, 1.0]], np.float32)  # group 0 has 3 for 2:4
    enc = encode(row, "2:4", outliers="4:256")
    back = decode(enc)
    assert np.array_equal(back, row)
    assert decode(encode(row, "2:4", outliers="4:256", impl="reference")).tolist() == row.tolist()
    outlier_values = np.frombuffer(enc.outliers.values, np.float32)
    assert outlier_values[outlier_values != 0].tolist() == [-7.0]  # largest magnitude


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("pattern", ["2:4", "8:16"])
def test_container_round_trip_and_file_size(tmp_path, layout: str, pattern: str) -> None:  # noqa: ANN001
    rng = np.random.default_rng(0)
    n, m = (int(x) for x in pattern.split(":"))
    array = random_nm(rng, 64, 576, n, m, np.float16)
    enc = encode(array, pattern, layout=layout, outliers="16:256")
    path = tmp_path / "w.safetensors"
    save(path, {"layer.weight": enc})
    loaded = load(path)["layer.weight"]
    assert loaded == enc
    assert np.array_equal(bits_of(decode(loaded)), bits_of(array))
    streams = sum(enc.stream_bytes().values())
    # the file is the streams plus the safetensors/JSON header, nothing else
    header = path.stat().st_size - streams
    assert 0 < header < 2048


def test_rank_sizes_match_mission_arithmetic() -> None:
    array = np.zeros((4096, 4096), np.float16)
    array[:, ::2] = 1
    enc = encode(array, "8:16", outliers="16:256")
    bpe = enc.bits_per_element()
    assert bpe["meta"] == 0.875
    assert bpe["values"] == 8.0
    assert bpe["outlier_positions"] == 84 / 256
    assert bpe["outlier_values"] == 1.0
    enc24 = encode(np.zeros((64, 64), np.float16), "2:4")
    assert enc24.bits_per_element()["meta"] == 0.75


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dtype=st.sampled_from(sorted(DTYPES)),
    row_blocks=st.integers(1, 3),
    col_blocks=st.integers(1, 3),
    outliers=st.sampled_from([None, "4:256", "16:256"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_cutlass_layout_through_the_codec(
    dtype: str, row_blocks: int, col_blocks: int, outliers: str | None, seed: int
) -> None:
    from nmlab.formats.cutlass import cutlass_layout, cutlass_pattern

    lay = cutlass_layout(DTYPES[dtype])
    pattern = cutlass_pattern(DTYPES[dtype])
    n, m = (int(x) for x in pattern.split(":"))
    rows, cols = lay.row_multiple * row_blocks, lay.col_multiple * col_blocks
    array = random_nm(np.random.default_rng(seed), rows, cols, n, m, DTYPES[dtype])
    enc = encode(array, pattern, layout="cutlass", outliers=outliers)
    assert np.array_equal(bits_of(decode(enc)), bits_of(array))
    assert len(enc.values) == array.nbytes // 2
    assert 8 * len(enc.meta) == array.size // m * 4  # one 4-bit nibble per group


def test_cutlass_layout_rejects_other_patterns() -> None:
    with pytest.raises(FormatError, match="stores float16 as 2:4"):
        encode(np.zeros((32, 32), np.float16), "4:8", layout="cutlass")


def test_stream_totals_sum_every_tensor() -> None:
    from nmlab.formats import stream_totals

    rng = np.random.default_rng(7)
    a = encode(random_nm(rng, 4, 32, 2, 4, np.float16), "2:4")
    b = encode(random_nm(rng, 3, 256, 8, 16, np.float16), "8:16", outliers="4:256")
    elements, streams = stream_totals([a, b])
    assert elements == 4 * 32 + 3 * 256
    assert streams["meta"] == len(a.meta) + len(b.meta)
    assert streams["values"] == len(a.values) + len(b.values)
    assert streams["outlier_positions"] == len(b.outliers.positions)
    assert stream_totals([]) == (0, {})
