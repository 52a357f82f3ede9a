"""The time model: fold timing, sparsity speed-up, stalls by cause, phases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nmlab.formats import encode
from nmlab.simulator.arch import load_arch
from nmlab.simulator.errors import SimulatorError
from nmlab.simulator.simulate import simulate
from nmlab.simulator.workload import Workload, synthetic_encoded, synthetic_weight

from .helpers import run, with_changes

WS32 = load_arch("scalesim-ws32")
RANK = load_arch("rank-8of16")


@pytest.mark.parametrize(("m", "n", "k"), [(100, 70, 50), (512, 512, 512), (1, 33, 65)])
def test_dense_ws_matches_systolic_fold_timing(m, n, k):
    # SCALE-Sim's weight-stationary fold: R fill + T stream + (R-1) skew + (C-1) drain
    rep = run(WS32, m, n, k)
    folds = math.ceil(k / 32) * math.ceil(n / 32)
    assert rep.compute_cycles == folds * (2 * 32 + 32 + m - 2)
    assert rep.array_cycles == rep.compute_cycles  # no stalls on the CALC-like preset
    assert rep.cycles == rep.array_cycles + rep.prologue_cycles + rep.epilogue_cycles


def test_dense_os_fold_timing():
    os_arch = with_changes(WS32, array={"dataflow": "os"})
    rep = run(os_arch, 100, 70, 50)
    assert rep.compute_cycles == math.ceil(100 / 32) * math.ceil(70 / 32) * (50 + 32 + 32 - 2)


def test_cycles_monotone_in_shape():
    base = run(WS32, 64, 64, 64).cycles
    for m, n, k in [(65, 64, 64), (64, 65, 64), (64, 64, 65), (128, 128, 128)]:
        assert run(WS32, m, n, k).cycles > base


@pytest.mark.parametrize("dataflow", ["ws", "os"])
def test_8of16_halves_compute_with_fast_decoder(dataflow):
    arch = with_changes(RANK, array={"dataflow": dataflow})
    dense = run(arch, 256, 256, 512, "dense", dtype="float16")
    sparse = run(arch, 256, 256, 512, "8:16", "rank", dtype="float16")
    assert sparse.stall_cycles["decoder"] == 0
    if dataflow == "ws":  # the reduction folds halve; fill/drain per fold stays
        assert sparse.folds * 2 == dense.folds
        assert sparse.compute_cycles * 2 == dense.compute_cycles
    else:  # the streamed reduction halves
        assert sparse.compute_cycles < dense.compute_cycles
        assert (
            sparse.compute_cycles - sparse.folds * (32 + 32 - 2)
            == (dense.compute_cycles - dense.folds * (32 + 32 - 2)) // 2
        )


@pytest.mark.parametrize("dataflow", ["ws", "os"])
def test_slow_decoder_stalls(dataflow):
    fast = with_changes(RANK, array={"dataflow": dataflow})
    slow_decoders = [d.model_dump() for d in fast.sparse.decoders]
    slow_decoders[0]["groups_per_cycle"] = 0.05
    slow = with_changes(fast, sparse={"decoders": slow_decoders})
    a = run(fast, 64, 128, 512, "8:16", "rank", dtype="float16")
    b = run(slow, 64, 128, 512, "8:16", "rank", dtype="float16")
    assert a.stall_cycles["decoder"] == 0
    assert b.stall_cycles["decoder"] > 0
    assert b.cycles > a.cycles
    assert b.energy_pj["decoder"] == a.energy_pj["decoder"]  # same work, more time


def test_sram_bandwidth_stalls():
    narrow = with_changes(WS32, buffers={"inputs": {"bandwidth_bytes_per_cycle": 8}})
    rep = run(narrow, 64, 64, 64)
    assert rep.stall_cycles["sram_bandwidth"] > 0
    assert rep.cycles > run(WS32, 64, 64, 64).cycles


def test_decode_phase_is_dram_bound_prefill_compute_bound():
    enc = synthetic_encoded(1024, 1024, "8:16", "rank", "float16")
    bw = RANK.dram.bandwidth_bytes_per_cycle
    decode = simulate(RANK, Workload.from_encoded(enc, 1))
    assert decode.stall_cycles["dram_bandwidth"] > 0
    dram_time = decode.traffic_bytes["dram"]["total"] / bw
    assert dram_time <= decode.cycles <= 1.05 * dram_time + 200
    wide = synthetic_encoded(4096, 1024, "8:16", "rank", "float16")
    prefill = simulate(RANK, Workload.from_encoded(wide, 512))
    assert prefill.compute_cycles > 0.9 * prefill.cycles


def test_decode_phase_metadata_bits_decide():
    # at one token, cycles follow the weight bytes: 8:16 rank (0.875 b/elem) beats
    # 2:4 with 2-bit indices (1 b/elem) at the same 50 % density
    r816 = synthetic_encoded(1024, 1024, "8:16", "rank", "float16")
    p24 = synthetic_encoded(1024, 1024, "2:4", "positional", "float16")
    stc = load_arch("stc-2of4")
    a = simulate(RANK, Workload.from_encoded(r816, 1))
    b = simulate(stc, Workload.from_encoded(p24, 1))
    assert r816.stream_bytes()["meta"] < p24.stream_bytes()["meta"]
    assert a.cycles < b.cycles
    assert a.traffic_bytes["dram"]["weights.meta"] < b.traffic_bytes["dram"]["weights.meta"]


@pytest.mark.parametrize(
    ("pattern", "layout"),
    [("dense", "dense"), ("8:16", "rank"), ("8:16", "bitmask"), ("2:4", "joint")],
)
def test_traffic_equals_container_stream_sizes(pattern, layout):
    enc = synthetic_encoded(96, 256, pattern, layout, "float16")
    rep = simulate(RANK, Workload.from_encoded(enc, 16))
    dram = rep.traffic_bytes["dram"]
    for stream, size in enc.stream_bytes().items():
        assert dram[f"weights.{stream}"] == size
    assert dram["inputs"] == 16 * 256 * 2
    assert dram["outputs"] == 16 * 96 * 2


def test_outlier_side_path_traffic_and_errors():
    w = synthetic_weight(64, 512, "8:16", "float16")
    mask = np.zeros(w.shape, dtype=bool)
    for block in range(2):  # 4 outliers per 256-block of every row, on pruned positions
        cols = np.flatnonzero(w[0, block * 256 : (block + 1) * 256] == 0)[:4] + block * 256
        mask[:, cols] = w[:, cols] == 0
    w[mask] = 8.0
    enc = encode(w, "8:16", layout="rank", outliers="4:256", outlier_mask=mask)
    assert enc.outliers is not None
    rep = simulate(RANK, Workload.from_encoded(enc, 8))
    for stream, size in enc.stream_bytes().items():
        assert rep.traffic_bytes["dram"][f"weights.{stream}"] == size
    with pytest.raises(SimulatorError, match="outlier side path"):
        simulate(
            with_changes(RANK, sparse={"outlier_side_path": False}), Workload.from_encoded(enc, 8)
        )


def test_bad_inputs():
    enc = synthetic_encoded(64, 64, "8:16", "rank", "float16")
    with pytest.raises(SimulatorError, match="cannot execute pattern 8:16"):
        simulate(load_arch("stc-2of4"), Workload.from_encoded(enc, 1))
    with pytest.raises(SimulatorError, match="no metadata decoder for layout rank"):
        simulate(
            load_arch("stc-2of4"),
            Workload.from_encoded(synthetic_encoded(64, 64, "2:4", "rank", "float16"), 1),
        )
    with pytest.raises(SimulatorError, match="no float16 MACs"):
        simulate(
            WS32, Workload.from_encoded(synthetic_encoded(64, 64, "dense", "dense", "float16"), 1)
        )
    with pytest.raises(SimulatorError, match="not divisible by M=16"):
        synthetic_encoded(64, 60, "8:16", "rank", "float16")
    with pytest.raises(SimulatorError, match="tokens must be >= 1"):
        Workload.from_encoded(enc, 0)


def test_energy_components_add_up_and_decoders_priced_apart():
    rank = run(RANK, 32, 128, 256, "8:16", "rank", dtype="float16")
    bitmask = run(RANK, 32, 128, 256, "8:16", "bitmask", dtype="float16")
    e = rank.energy_pj
    assert e["total"] == pytest.approx(sum(v for k, v in e.items() if k != "total"))
    groups = 128 * 256 // 16
    assert e["decoder"] == pytest.approx(groups * 1.0)
    assert bitmask.energy_pj["decoder"] == pytest.approx(groups * 0.3)
    assert e["mac"] == pytest.approx(32 * 128 * 128 * 2.0)
    dense = run(RANK, 32, 128, 256, "dense", dtype="float16")
    assert dense.energy_pj["decoder"] == 0 and dense.energy_pj["select_mux"] == 0
    assert dense.energy_pj["mac"] == pytest.approx(2 * e["mac"])
