"""Functional exactness: the array's arithmetic on decoded streams."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nmlab.formats import encode
from nmlab.simulator.errors import SimulatorError
from nmlab.simulator.functional import compress, run_gemm
from nmlab.simulator.workload import synthetic_weight


def _encode(w, pattern, layout):
    return (
        encode(w, None, layout="dense") if pattern == "dense" else encode(w, pattern, layout=layout)
    )


@pytest.mark.parametrize(
    ("pattern", "layout"),
    [("dense", "dense"), ("2:4", "rank"), ("8:16", "rank"), ("8:16", "bitmask")],
)
def test_int8_bit_exact(pattern, layout):
    rng = np.random.default_rng(0)
    w = synthetic_weight(48, 96, pattern, "int8", seed=1)
    x = rng.integers(-128, 128, size=(9, 96), dtype=np.int8)
    y = run_gemm(_encode(w, pattern, layout), x)
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, x.astype(np.int32) @ w.T.astype(np.int32))


@settings(max_examples=15, deadline=None)
@given(
    tokens=st.integers(1, 5),
    rows=st.integers(1, 20),
    groups=st.integers(1, 6),
    seed=st.integers(0, 2**16),
    fold=st.sampled_from([1, 3, 32]),
)
def test_int8_bit_exact_random_shapes(tokens, rows, groups, seed, fold):
    rng = np.random.default_rng(seed)
    w = synthetic_weight(rows, 16 * groups, "8:16", "int8", seed=seed)
    w[rng.random(w.shape) < 0.2] = 0  # groups with fewer than N kept
    x = rng.integers(-128, 128, size=(tokens, 16 * groups), dtype=np.int8)
    y = run_gemm(encode(w, "8:16", layout="rank"), x, rows=fold)
    np.testing.assert_array_equal(y, x.astype(np.int32) @ w.T.astype(np.int32))


def _fold_order_reference(x32: np.ndarray, w32: np.ndarray, rows: int) -> np.ndarray:
    """The documented order, in numpy: per fold a fresh float32 partial sum over kept k."""
    nz = [np.flatnonzero(r) for r in w32]  # kept positions per output row
    y = np.zeros((x32.shape[0], w32.shape[0]), dtype=np.float32)
    for n, ks in enumerate(nz):
        acc = np.zeros(x32.shape[0], dtype=np.float32)
        for f0 in range(0, len(ks), rows):
            p = np.zeros(x32.shape[0], dtype=np.float32)
            for k in ks[f0 : f0 + rows]:
                p = p + w32[n, k] * x32[:, k]
            acc = acc + p
        y[:, n] = acc
    return y


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_float_order_and_tolerance(dtype):
    rng = np.random.default_rng(2)
    w = synthetic_weight(24, 256, "8:16", dtype, seed=3)
    npdt = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    x = rng.standard_normal((5, 256)).astype(npdt)
    y = run_gemm(encode(w, "8:16", layout="rank"), x, rows=32)
    x32, w32 = x.astype(np.float32), w.astype(np.float32)
    # the stated order, bit for bit
    np.testing.assert_array_equal(y, _fold_order_reference(x32, w32, 32))
    # the stated bound against the exact product
    exact = x32.astype(np.float64) @ w32.T.astype(np.float64)
    k_eff = 128
    u = 2.0**-24
    gamma = k_eff * u / (1 - k_eff * u)
    bound = gamma * (np.abs(x32).astype(np.float64) @ np.abs(w32).T.astype(np.float64))
    assert np.all(np.abs(y - exact) <= bound)


def test_compress_keeps_positions():
    w = np.array([[0, 3, 0, 5, 1, 0, 0, 0]], dtype=np.int8)
    vals, idx = compress(w, 2, 4)
    np.testing.assert_array_equal(vals, [[3, 5, 1, 0]])
    np.testing.assert_array_equal(idx, [[1, 3, 4, 4]])
    with pytest.raises(SimulatorError):
        compress(np.ones((1, 4), dtype=np.int8), 2, 4)


def test_shape_and_dtype_errors():
    enc = encode(synthetic_weight(8, 32, "8:16", "int8"), "8:16", layout="rank")
    with pytest.raises(SimulatorError, match="do not match"):
        run_gemm(enc, np.zeros((2, 16), dtype=np.int8))
    with pytest.raises(SimulatorError, match="int8 activations"):
        run_gemm(enc, np.zeros((2, 32), dtype=np.float32))
