"""Bytes moved per level (DRAM, SRAM) and per operand; weight streams kept apart.

DRAM figures come from the fold replay (kernel.py); weight bytes are the container's
stored stream sizes times how often the mapping fetches them (1 unless a weight slice
does not fit on chip). SRAM figures count reads plus writes of each buffer.
"""

from __future__ import annotations

import numpy as np

from .kernel import DRAM_IN, DRAM_OUT_WR, DRAM_PSUM_RD, DRAM_W
from .workload import ITEMSIZE, Workload


def acc_bytes(dtype: str) -> int:
    return 4  # int32 or fp32 accumulation


def out_bytes(dtype: str) -> int:
    """int8 GEMMs write int32 results; floating-point ones write their own dtype."""
    return 4 if dtype == "int8" else ITEMSIZE[dtype]


def account(
    wl: Workload,
    res: np.ndarray,
    row_folds: int,
    col_folds: int,
    output_stationary: bool,
    tiles: int,
) -> dict[str, dict[str, int]]:
    ab = ITEMSIZE[wl.dtype]
    weight_total = wl.weight_bytes
    fetches = res[DRAM_W] / weight_total if weight_total else 0.0
    dram = {f"weights.{k}": round(v * fetches) for k, v in wl.streams.items()}
    dram["inputs"] = round(res[DRAM_IN])
    dram["psums"] = round(res[DRAM_PSUM_RD]) * 2  # spilled partial sums: read back + written
    dram["outputs"] = round(res[DRAM_OUT_WR]) - dram["psums"] // 2
    dram["total"] = sum(dram.values())

    t, n, k = wl.tokens, wl.n_out, wl.k_in
    w_reads = row_folds if output_stationary else tiles
    sram = {f"weights.{k_}": round(v * fetches) + v * w_reads for k_, v in wl.streams.items()}
    sram["inputs"] = round(res[DRAM_IN]) + col_folds * t * k * ab
    if output_stationary:
        sram["outputs"] = 2 * t * n * out_bytes(wl.dtype)
    else:
        psum = t * n * acc_bytes(wl.dtype)
        sram["outputs"] = row_folds * psum + (row_folds - 1) * psum + t * n * out_bytes(wl.dtype)
    sram["total"] = sum(sram.values())
    return {"dram": dram, "sram": sram}
