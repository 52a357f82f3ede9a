"""Simulator benchmark and SCALE-Sim validation (not a test; prints JSON lines).

    python benchmarks/simulator.py              # speed, memory, error messages
    python benchmarks/simulator.py --validate   # side-by-side with SCALE-Sim v3

SCALE-Sim v3 needs numpy<2, so it runs in its own virtual environment, found at
$NMLAB_SCALESIM_PYTHON or /work/scalesim-venv/bin/python:
    python3 -m venv /work/scalesim-venv && /work/scalesim-venv/bin/pip install scalesim 'numpy<2'
Its wall time is measured inside that process around `run_scale` only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCALESIM_PY = os.environ.get("NMLAB_SCALESIM_PYTHON", "/work/scalesim-venv/bin/python")

# SCALE-Sim's default config (configs/scale.cfg of the v3 repository) with the dataflow,
# array and SRAM sizes filled in; InterfaceBandwidth CALC as in the default.
_CFG = """[general]
run_name = nmlab

[architecture_presets]
ArrayHeight: {rows}
ArrayWidth: {cols}
IfmapSramSzkB: {sram_kib}
FilterSramSzkB: {sram_kib}
OfmapSramSzkB: {sram_kib}
IfmapOffset: 0
FilterOffset: 10000000
OfmapOffset: 20000000
Bandwidth: 10
Dataflow: {dataflow}
MemoryBanks: 1
ReadRequestBuffer: 32
WriteRequestBuffer: 32

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: 10
IfmapSRAMBankNum: 10
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: 10
FilterSRAMBankNum: 10
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport: false
SparseRep: ellpack_block
OptimizedMapping: false
BlockSize: 8
RandomNumberGeneratorSeed: 40

[run_presets]
InterfaceBandwidth: CALC
UseRamulatorTrace: False
"""

_RUNNER = r"""
import json, sys, time, os
from scalesim.scale_sim import scalesim
d, = sys.argv[1:]
t = time.perf_counter()
s = scalesim(save_disk_space=True, verbose=False, config=d + "/scale.cfg",
             topology=d + "/topo.csv", layout=d + "/layout.csv", input_type_gemm=True)
s.run_scale(top_path=d + "/out")
wall = time.perf_counter() - t
row = open(d + "/out/nmlab/COMPUTE_REPORT.csv").read().splitlines()[1].split(",")
print(json.dumps({"wall_s": wall, "cycles_incl_prefetch": int(row[1]), "cycles": int(row[2]),
                  "stall_cycles": int(row[3])}))
"""


def scalesim_available() -> bool:
    return Path(SCALESIM_PY).exists()


def run_scalesim(m: int, n: int, k: int, dataflow: str, rows=32, cols=32, sram_kib=64) -> dict:
    with tempfile.TemporaryDirectory() as d:
        Path(d, "scale.cfg").write_text(
            _CFG.format(rows=rows, cols=cols, sram_kib=sram_kib, dataflow=dataflow)
        )
        Path(d, "topo.csv").write_text(f"Layer, M, N, K,\ng, {m}, {n}, {k},\n")
        # GEMM mode still parses a layout file; custom layouts are off so values are unused.
        Path(d, "layout.csv").write_text(
            "Layer," + ",".join("abcdefghijklmnopqrst") + ",\n"
            "g,1,1,1,1,1,1,0,1,2,0,1,2,0,1,2,3,0,1,2,3,\n"
        )
        out = subprocess.run(
            [SCALESIM_PY, "-c", _RUNNER, d], capture_output=True, text=True, check=True
        )
        return json.loads(out.stdout.strip().splitlines()[-1])


def ours(m: int, n: int, k: int, dataflow: str, arch_name="scalesim-ws32") -> dict:
    from nmlab.simulator.arch import load_arch
    from nmlab.simulator.simulate import simulate
    from nmlab.simulator.workload import Workload, synthetic_encoded

    arch = load_arch(arch_name)
    if dataflow != arch.array.dataflow:
        arch = arch.model_copy(
            update={"array": arch.array.model_copy(update={"dataflow": dataflow})}
        )
    enc = synthetic_encoded(n, k, "dense", "dense", "int8")
    wl = Workload.from_encoded(enc, m)
    t = time.perf_counter()
    rep = simulate(arch, wl)
    return {"wall_s": time.perf_counter() - t, "report": rep}


VALIDATION_SHAPES = {
    "ws": [
        (512, 512, 512),
        (100, 70, 50),
        (256, 1024, 128),
        (1000, 40, 300),
        (33, 500, 97),
        (8, 576, 1536),
        (128, 1536, 576),
    ],
    "os": [(100, 70, 50), (33, 500, 97), (1000, 40, 300), (200, 96, 1000)],
}


def validate() -> None:
    if not scalesim_available():
        print(json.dumps({"error": f"SCALE-Sim python not found at {SCALESIM_PY}"}))
        return
    rows = []
    for dataflow, shapes in VALIDATION_SHAPES.items():
        for m, n, k in shapes:
            ref = run_scalesim(m, n, k, dataflow)
            mine = ours(m, n, k, dataflow)["report"]
            err = (mine.array_cycles - ref["cycles"]) / ref["cycles"]
            line = {
                "dataflow": dataflow,
                "m": m,
                "n": n,
                "k": k,
                "scalesim_cycles": ref["cycles"],
                "scalesim_cycles_incl_prefetch": ref["cycles_incl_prefetch"],
                "scalesim_stall_cycles": ref["stall_cycles"],
                "scalesim_wall_s": round(ref["wall_s"], 3),
                "nmlab_array_cycles": mine.array_cycles,
                "nmlab_total_cycles": mine.cycles,
                "rel_diff": round(err, 6),
            }
            rows.append(line)
            print(json.dumps(line), flush=True)
    print(
        "\n| dataflow | M | N | K | SCALE-Sim Total Cycles | nmlab array cycles | diff "
        "| SCALE-Sim incl. prefetch | nmlab incl. prologue/epilogue | SCALE-Sim wall s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['dataflow']} | {r['m']} | {r['n']} | {r['k']} | {r['scalesim_cycles']} "
            f"| {r['nmlab_array_cycles']} | {100 * r['rel_diff']:+.3f}% "
            f"| {r['scalesim_cycles_incl_prefetch']} | {r['nmlab_total_cycles']} "
            f"| {r['scalesim_wall_s']} |"
        )


def _error_line(fn) -> str:  # noqa: ANN001
    from nmlab.simulator.errors import SimulatorError

    try:
        fn()
    except SimulatorError as err:
        return str(err)
    return "NO ERROR"


def bench(with_scalesim: bool) -> None:
    from nmlab.simulator.arch import load_arch
    from nmlab.simulator.simulate import simulate
    from nmlab.simulator.workload import Workload, synthetic_encoded

    t = time.perf_counter()
    first = ours(512, 512, 512, "ws")
    first_call = time.perf_counter() - t  # includes Numba compile or cache load
    walls = [ours(512, 512, 512, "ws")["wall_s"] for _ in range(5)]
    wall = min(walls)
    line = {
        "bench": "gemm 512x512x512 dense int8, scalesim-ws32",
        "wall_s": wall,
        "first_call_s_incl_jit": round(first_call, 3),
        "cycles": first["report"].array_cycles,
    }
    if with_scalesim and scalesim_available():
        ref = run_scalesim(512, 512, 512, "ws")
        line.update(
            scalesim_wall_s=ref["wall_s"],
            scalesim_cycles=ref["cycles"],
            speedup=ref["wall_s"] / wall,
        )
    print(json.dumps(line), flush=True)

    arch = load_arch("rank-8of16")
    t = time.perf_counter()
    enc = synthetic_encoded(11008, 4096, "8:16", "rank", "float16")
    encode_s = time.perf_counter() - t
    wl = Workload.from_encoded(enc, 2048, "mlp.up_proj")
    t = time.perf_counter()
    rep = simulate(arch, wl)
    wall = time.perf_counter() - t
    print(
        json.dumps(
            {
                "bench": "4096x11008 layer, 2048 tokens, 8:16 rank fp16, rank-8of16",
                "wall_s": wall,
                "encode_s_not_counted": round(encode_s, 3),
                "cycles": rep.cycles,
                "stall_cycles": rep.stall_cycles,
                "dram_bytes": rep.traffic_bytes["dram"]["total"],
            }
        ),
        flush=True,
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "bench": "peak_rss_mib (process, incl. the encoded 4096x11008 weight)",
                "value": round(peak, 1),
            }
        )
    )

    small = synthetic_encoded(64, 64, "8:16", "rank", "float16")
    errors = {
        "unknown preset": _error_line(lambda: load_arch("no-such-preset")),
        "k not divisible by M": _error_line(
            lambda: synthetic_encoded(64, 60, "8:16", "rank", "float16")
        ),
        "pattern the arch cannot execute": _error_line(
            lambda: simulate(load_arch("stc-2of4"), Workload.from_encoded(small, 1))
        ),
    }
    print(json.dumps({"bench": "bad input", "messages": errors}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--validate", action="store_true", help="SCALE-Sim side-by-side table")
    parser.add_argument("--no-scalesim", action="store_true", help="skip the SCALE-Sim timing")
    args = parser.parse_args()
    if args.validate:
        validate()
    else:
        bench(not args.no_scalesim)


if __name__ == "__main__":
    sys.exit(main())
