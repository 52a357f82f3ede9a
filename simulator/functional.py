"""The array's actual arithmetic on a decoded stream: y[t, n] = sum_k x[t, k] * W[n, k].

The weight comes from `nmlab.formats.decode` of the container (never re-derived), is
compressed to the kept values of each N:M group plus their positions (what the
activation-select muxes see), and multiplied in the weight-stationary fold order:

- int8 x int8 with int32 accumulation (wrapping like numpy): equal to numpy's matmul on
  the decoded weight bit for bit, whatever the order.
- float16 / bfloat16 / float32: products and sums in float32. Within a fold the partial
  sum runs down the column in increasing k over the fold's `rows` kept weights,
  starting from 0; each fold's partial sum is then added to the output accumulator in
  increasing fold order. Bound against an exact (float64) product: |y - y_exact| <=
  gamma_K * sum_k |x||w| with gamma_K = K u / (1 - K u), u = 2^-24 (tested).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numba as nb
import numpy as np

from .errors import SimulatorError

if TYPE_CHECKING:
    from nmlab.formats import EncodedTensor


def compress(w: np.ndarray, n_keep: int, group_m: int) -> tuple[np.ndarray, np.ndarray]:
    """Kept values and their column indices per row: [out, K*N/M] each.

    Groups with fewer than N non-zeros are padded with zero values (index of the group's
    first position), which a mux-based array also multiplies.
    """
    rows, cols = w.shape
    g = w.reshape(rows, cols // group_m, group_m)
    nz = g != 0
    if int(nz.sum(axis=-1).max(initial=0)) > n_keep:
        raise SimulatorError(f"decoded weight has more than {n_keep} non-zeros in a group")
    # stable order: non-zeros first, each in increasing position
    order = np.argsort(~nz, axis=-1, kind="stable")[..., :n_keep]
    vals = np.take_along_axis(g, order, axis=-1)
    base = (np.arange(cols // group_m) * group_m)[None, :, None]
    idx = np.where(np.take_along_axis(nz, order, axis=-1), order + base, base)
    return vals.reshape(rows, -1), idx.reshape(rows, -1).astype(np.int64)


@nb.njit(cache=True)
def _gemm_int(x, vals, idx, rows):
    t_n, n_out, k_eff = x.shape[0], vals.shape[0], vals.shape[1]
    y = np.zeros((t_n, n_out), dtype=np.int32)
    for t in range(t_n):
        for n in range(n_out):
            acc = np.int32(0)
            for f0 in range(0, k_eff, rows):
                p = np.int32(0)
                for j in range(f0, min(f0 + rows, k_eff)):
                    p += np.int32(vals[n, j]) * np.int32(x[t, idx[n, j]])
                acc += p
            y[t, n] = acc
    return y


@nb.njit(cache=True)
def _gemm_f32(x, vals, idx, rows):
    t_n, n_out, k_eff = x.shape[0], vals.shape[0], vals.shape[1]
    y = np.zeros((t_n, n_out), dtype=np.float32)
    for t in range(t_n):
        for n in range(n_out):
            acc = np.float32(0.0)
            for f0 in range(0, k_eff, rows):
                p = np.float32(0.0)
                for j in range(f0, min(f0 + rows, k_eff)):
                    p += vals[n, j] * x[t, idx[n, j]]
                acc += p
            y[t, n] = acc
    return y


def run_gemm(enc: EncodedTensor, x: np.ndarray, rows: int = 32) -> np.ndarray:
    """y = x @ decode(enc)^T computed as the array does; int32 for int8, else float32."""
    from nmlab.formats import decode

    w = decode(enc)
    n_out, k_in = w.shape
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != k_in:
        raise SimulatorError(f"activations of shape {x.shape} do not match weight {w.shape}")
    if enc.pattern is None:
        vals = w
        idx = np.broadcast_to(np.arange(k_in, dtype=np.int64), w.shape).copy()
    else:
        vals, idx = compress(w, enc.pattern.n, enc.pattern.m)
    if enc.dtype == "int8":
        if x.dtype != np.int8:
            raise SimulatorError(f"int8 weights need int8 activations (got {x.dtype})")
        return _gemm_int(np.ascontiguousarray(x), np.ascontiguousarray(vals), idx, rows)
    return _gemm_f32(
        np.ascontiguousarray(x, dtype=np.float32),
        np.ascontiguousarray(vals, dtype=np.float32),
        idx,
        rows,
    )
