"""The chain of stages: check -> map -> time (Numba) -> traffic -> energy -> report."""

from __future__ import annotations

import math

from . import kernel as K
from .arch import Arch, DecoderConfig, config_path
from .energy import EnergyCounts, EnergyTable, load_energy_table, price
from .errors import SimulatorError
from .report import Report
from .traffic import acc_bytes, account, out_bytes
from .workload import ITEMSIZE, Workload


def check(arch: Arch, wl: Workload) -> DecoderConfig | None:
    """Can this array run this container? Returns the metadata decoder it would use."""
    if wl.dtype not in arch.array.mac_dtypes:
        raise SimulatorError(
            f"{wl.name}: arch {arch.name} has no {wl.dtype} MACs "
            f"(mac_dtypes: {', '.join(arch.array.mac_dtypes)})"
        )
    if not arch.executes(wl.pattern):
        raise SimulatorError(
            f"{wl.name}: arch {arch.name} cannot execute pattern {wl.pattern} natively "
            f"(native: {', '.join(arch.sparse.native)})"
        )
    if wl.pattern != "dense" and wl.k_in % wl.group_m:
        raise SimulatorError(
            f"{wl.name}: k={wl.k_in} is not divisible by M={wl.group_m} of {wl.pattern}"
        )
    if wl.outliers and not (arch.sparse.outlier_side_path and arch.sparse.outlier_macs_per_cycle):
        raise SimulatorError(
            f"{wl.name}: the container has outliers but arch {arch.name} has no outlier side path"
        )
    if wl.pattern == "dense":
        return None
    decoder = arch.decoder_for(wl.pattern, wl.layout)
    if decoder is None:
        raise SimulatorError(
            f"{wl.name}: arch {arch.name} has no metadata decoder for layout {wl.layout} "
            f"of pattern {wl.pattern}"
        )
    return decoder


def _token_tile(arch: Arch, wl: Workload, half: dict[str, float]) -> int:
    """Tokens per weight-stationary fold (see MappingConfig)."""
    choice = arch.mapping.token_tile
    if choice == "all" or arch.array.dataflow == "os":
        return wl.tokens
    if isinstance(choice, int):
        return min(choice, wl.tokens)
    acc = acc_bytes(wl.dtype)
    psum_max = int(half["outputs"] // (min(arch.array.cols, wl.n_out) * acc))
    tile = max(1, min(wl.tokens, psum_max))
    in_max = int(half["inputs"] // (wl.k_in * ITEMSIZE[wl.dtype]))
    if in_max >= min(tile, 2 * arch.array.rows):
        tile = min(tile, in_max)
    return tile


def simulate(arch: Arch, wl: Workload, table: EnergyTable | None = None) -> Report:
    decoder = check(arch, wl)
    table = table or load_energy_table(arch.energy_table)
    a = arch.array
    os_flow = a.dataflow == "os"
    ab = ITEMSIZE[wl.dtype]
    window = wl.group_m / wl.n_keep if wl.n_keep else 1.0
    half = {
        name: getattr(arch.buffers, name).size_kib * 1024 / 2
        for name in ("weights", "inputs", "outputs")
    }
    k_in = wl.k_in
    acc, cols = acc_bytes(wl.dtype), min(a.cols, wl.n_out)
    token_tile = _token_tile(arch, wl, half)
    # What stays on chip (half of each buffer is the active copy, half the prefetch).
    if os_flow:
        input_once = wl.tokens * k_in * ab <= half["inputs"]
        weight_once = wl.weight_bytes * cols / wl.n_out <= half["weights"]
    else:
        input_once = token_tile * k_in * ab <= half["inputs"]
        weight_once = wl.weight_bytes <= half["weights"]
    psum_on_chip = token_tile * cols * acc <= half["outputs"]

    res = K.simulate_folds(
        os_flow,
        a.rows,
        a.cols,
        wl.tokens,
        wl.k_eff,
        wl.n_out,
        window,
        wl.n_keep,
        wl.group_m,
        ab,
        acc_bytes(wl.dtype),
        out_bytes(wl.dtype),
        wl.weight_bytes,
        token_tile,
        weight_once,
        input_once,
        psum_on_chip,
        arch.buffers.weights.bandwidth_bytes_per_cycle,
        arch.buffers.inputs.bandwidth_bytes_per_cycle,
        arch.buffers.outputs.bandwidth_bytes_per_cycle,
        arch.dram.bandwidth_bytes_per_cycle,
        decoder.groups_per_cycle if decoder else 1.0,
        decoder.latency_cycles if decoder else 0,
        wl.outliers,
        arch.sparse.outlier_macs_per_cycle or 1.0,
    )
    row_folds = math.ceil((wl.tokens if os_flow else wl.k_eff) / a.rows)
    col_folds = math.ceil(wl.n_out / a.cols)
    tiles = 1 if os_flow else math.ceil(wl.tokens / token_tile)
    traffic = account(wl, res, row_folds, col_folds, os_flow, tiles)

    macs = wl.tokens * wl.n_out * wl.k_eff
    counts = EnergyCounts(
        macs=macs,
        select_bits=macs * math.ceil(math.log2(wl.group_m))
        if wl.n_keep and arch.sparse.select_mux
        else 0,
        decoded_groups=int(res[K.DECODED_GROUPS]),
        outlier_macs=wl.outliers * wl.tokens,
        sram_bytes={
            "weights": sum(v for k, v in traffic["sram"].items() if k.startswith("weights.")),
            "inputs": traffic["sram"]["inputs"],
            "outputs": traffic["sram"]["outputs"],
        },
        dram_bytes=traffic["dram"]["total"],
    )
    energy = price(arch, table, counts, wl.dtype, decoder)

    stalls = {
        "dram_bandwidth": math.ceil(res[K.STALL_DRAM]),
        "sram_bandwidth": math.ceil(res[K.STALL_SRAM]),
        "decoder": math.ceil(res[K.STALL_DECODER]),
        "outlier_path": math.ceil(res[K.STALL_OUTLIER]),
    }
    compute = math.ceil(res[K.COMPUTE])
    prologue, epilogue = math.ceil(res[K.PROLOGUE]), math.ceil(res[K.EPILOGUE])
    notes = []
    if not os_flow and token_tile < wl.tokens:
        notes.append(f"tokens streamed in tiles of {token_tile}")
    if not input_once:
        notes.append("activations do not fit on chip: re-fetched for every column fold")
    if not os_flow and not psum_on_chip:
        notes.append("partial sums do not fit in the output buffer: spilled to DRAM")
    if os_flow and not weight_once:
        notes.append("a weight column slice does not fit on chip: re-fetched per token tile")
    return Report(
        arch=arch.name,
        workload={
            "name": wl.name,
            "tokens": wl.tokens,
            "n_out": wl.n_out,
            "k_in": wl.k_in,
            "dtype": wl.dtype,
            "pattern": wl.pattern,
            "layout": wl.layout,
            "decoder": decoder.name if decoder else None,
            "dataflow": a.dataflow,
        },
        cycles=prologue + compute + sum(stalls.values()) + epilogue,
        array_cycles=compute + sum(stalls.values()),
        prologue_cycles=prologue,
        epilogue_cycles=epilogue,
        compute_cycles=compute,
        stall_cycles=stalls,
        utilisation=macs / (a.rows * a.cols * res[K.TOTAL]),
        folds=int(res[K.FOLDS]),
        time_us=res[K.TOTAL] / a.clock_mhz,
        traffic_bytes=traffic,
        energy_pj=energy,
        energy_table=str(config_path(arch.energy_table)),
        notes=notes,
    )
