"""`nmlab simulate gemm|model`: the simulator on the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

simulate_app = typer.Typer(
    name="simulate",
    help="Cycle-approximate accelerator simulator: cycles, traffic and energy of a format.",
    no_args_is_help=True,
)


def _fail(err: Exception) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(2)


@simulate_app.command("gemm")
def gemm(
    m: int = typer.Option(..., "--m", help="tokens (rows of the activation)"),
    n: int = typer.Option(..., "--n", help="output features (rows of the weight)"),
    k: int = typer.Option(..., "--k", help="input features (reduction)"),
    pattern: str = typer.Option("dense", "--pattern", help="dense, 2:4, 8:16, ..."),
    arch: str = typer.Option("scalesim-ws32", "--arch", help="architecture TOML or preset name"),
    layout: str = typer.Option(
        "", "--layout", help="metadata layout (default: the arch's decoder)"
    ),
    dtype: str = typer.Option("", "--dtype", help="int8, float16, ... (default: first MAC type)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Simulate one GEMM; the weight is a synthetic tensor encoded with the real codec."""
    from .arch import load_arch
    from .errors import SimulatorError
    from .report import render
    from .simulate import simulate
    from .workload import Workload, synthetic_encoded

    try:
        a = load_arch(arch)
        for name, v in (("m", m), ("n", n), ("k", k)):
            if v < 1:
                raise SimulatorError(f"--{name} must be >= 1 (got {v})")
        if pattern != "dense" and not a.executes(pattern):
            raise SimulatorError(
                f"arch {a.name} cannot execute pattern {pattern} natively "
                f"(native: {', '.join(a.sparse.native)})"
            )
        dt = dtype or a.array.mac_dtypes[0]
        lay = "dense" if pattern == "dense" else (layout or a.decoder_layout(pattern))
        if lay is None:
            raise SimulatorError(f"arch {a.name} has no metadata decoder for pattern {pattern}")
        enc = synthetic_encoded(n, k, pattern, lay, dt)
        report = simulate(a, Workload.from_encoded(enc, m))
    except (SimulatorError, ValueError) as err:
        _fail(err)
        return
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict()) + "\n")
    else:
        typer.echo(render(report))


@simulate_app.command("model")
def model(
    out: Path = typer.Argument(
        ..., help="`nmlab prune` folder, or a container .safetensors from `nmlab encode`"
    ),
    arch: str = typer.Option("rank-8of16", "--arch", help="architecture TOML or preset name"),
    tokens: int = typer.Option(2048, "--tokens", help="prefill tokens"),
    dtype: str = typer.Option("float16", "--dtype", help="value type when encoding a folder"),
    pattern: str = typer.Option("", "--pattern", help="N:M of a folder (default: metrics.json)"),
    ppl_windows: int = typer.Option(0, "--ppl-windows", help="perplexity windows (folder only)"),
    seqlen: int = typer.Option(256, "--seqlen", help="tokens per perplexity window"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Every linear layer: per-layer and total cycles, traffic, energy; prefill and decode.

    With --ppl-windows N on a pruned folder, also the perplexity of the model with its
    weights taken from decode() of float32 streams, next to the pruned model's own.
    """
    from .arch import load_arch
    from .errors import SimulatorError
    from .model import (
        encode_pruned_dir,
        is_pruned_dir,
        load_container,
        perplexity_through_decode,
        simulate_model,
    )
    from .report import render

    ppl = None
    try:
        a = load_arch(arch)
        if is_pruned_dir(out):
            tensors = encode_pruned_dir(out, a, dtype, pattern or None)
            if ppl_windows > 0:
                lossless = encode_pruned_dir(out, a, "float32", pattern or None)
                ppl = perplexity_through_decode(out, lossless, seqlen, ppl_windows)
        else:
            if ppl_windows > 0:
                raise SimulatorError("--ppl-windows needs an `nmlab prune` folder")
            tensors = load_container(out)
        result = simulate_model(a, tensors, tokens)
    except (SimulatorError, ValueError) as err:
        _fail(err)
        return
    if as_json:
        doc = {
            phase: {
                "total": r["total"].to_dict(),
                "layers": [x.to_dict() for x in r["layers"]],
            }
            for phase, r in result.items()
        }
        if ppl is not None:
            doc["perplexity"] = ppl
        sys.stdout.write(json.dumps(doc) + "\n")
        return
    for phase, r in result.items():
        typer.echo(f"{phase}: {len(r['layers'])} layers")
        for x in r["layers"]:
            stalls = sum(x.stall_cycles.values())
            typer.echo(
                f"  {x.workload['name']}: {x.cycles:,} cycles ({stalls:,} stall), "
                f"{x.traffic_bytes['dram']['total']:,} DRAM bytes, "
                f"{x.energy_pj['total'] / 1e6:,.2f} uJ"
            )
        typer.echo(render(r["total"], title=f"{phase} total"))
    if ppl is not None:
        typer.echo(
            f"perplexity ({ppl['corpus']}, {ppl['windows']} x {ppl['seqlen']} tokens): "
            f"pruned model {ppl['pruned_ppl']:.6f}, through decode {ppl['decoded_ppl']:.6f}"
        )


def register(app: typer.Typer) -> None:
    """Add `nmlab simulate gemm|model` to the `nmlab` app."""
    app.add_typer(simulate_app, name="simulate")
