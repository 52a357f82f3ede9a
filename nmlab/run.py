"""`nmlab run`: the main job, end to end.

Format table + bit-exact round trip -> dense evaluation -> prune every variant
(method x pattern x {base, outliers, outliers+vc}) and evaluate it -> encode its linear
weights (fp16) -> simulate each on every arch that executes it -> results.json,
report.md and plots in the output folder. Every step is cached under OUTPUT/cache/
by a hash of its inputs, so a rerun redoes only what changed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from .run_plan import FULL, QUICK, RunError


def keep_largest(weight: np.ndarray, n: int, m: int) -> np.ndarray:
    """Zero all but the n largest-magnitude elements of each group of m (demo input only)."""
    rows, cols = weight.shape
    groups = weight.reshape(rows, cols // m, m).copy()
    drop = np.argsort(np.abs(groups), axis=2, kind="stable")[..., : m - n]
    np.put_along_axis(groups, drop, 0, axis=2)
    return groups.reshape(rows, cols)


def round_trip_rows(size: int, seed: int = 0) -> list[dict]:
    from nmlab.formats import decode, encode

    rng = np.random.default_rng(seed)
    dense = rng.standard_t(df=4, size=(size, size)).astype(np.float32)
    rows = []
    cases = [("2:4", "rank", None), ("2:4", "joint", None), ("2:4", "bitmask", None),
             ("2:4", "positional", None), ("8:16", "rank", None), ("8:16", "joint", None),
             ("8:16", "rank", "16:256")]  # fmt: skip
    for pattern, layout, outliers in cases:
        n, m = (int(x) for x in pattern.split(":"))
        weight = dense
        outlier_mask = None
        if outliers:  # the 16 largest per 256-block stay dense, the rest is pruned n:m
            k = int(outliers.split(":")[0])
            blocks = np.abs(dense).reshape(size, -1, 256)
            top = np.argsort(-blocks, axis=2, kind="stable")[..., :k]
            outlier_mask = np.zeros(blocks.shape, bool)
            np.put_along_axis(outlier_mask, top, True, axis=2)
            outlier_mask = outlier_mask.reshape(size, size)
            weight = np.where(outlier_mask, 0, dense)
        sparse = keep_largest(weight, n, m)
        if outlier_mask is not None:
            sparse = np.where(outlier_mask, dense, sparse)
        sparse = sparse.astype(np.float16)
        start = time.perf_counter()
        enc = encode(sparse, pattern, layout=layout, outliers=outliers, outlier_mask=outlier_mask)
        encoded = time.perf_counter()
        back = decode(enc)
        decoded = time.perf_counter()
        exact = bool(np.array_equal(back.view(np.uint16), sparse.view(np.uint16)))
        bits = enc.bits_per_element()
        rows.append({
            "pattern": pattern, "layout": layout, "outliers": outliers, "shape": [size, size],
            "bit_exact": exact, "metadata_bits_per_element": bits["meta"],
            "outlier_bits_per_element": bits.get("outlier_positions", 0.0)
            + bits.get("outlier_values", 0.0),
            "total_bits_per_element": bits["total"], "encode_s": encoded - start,
            "decode_s": decoded - encoded,
        })  # fmt: skip
    return rows


def formats_step(size: int, quiet: bool) -> dict[str, Any]:
    """The format cost table and the round trip (printed unless quiet)."""
    from rich.console import Console
    from rich.table import Table

    from nmlab.formats.cli import print_table
    from nmlab.formats.table import format_table

    rows = round_trip_rows(size)
    if not quiet:
        print_table(format_table())
        table = Table(title=f"Round trip of a {size}x{size} fp16 matrix (Student-t weights)")
        for col in ("pattern", "layout", "outliers", "bit-exact", "meta b/e", "total b/e",
                    "enc s", "dec s"):  # fmt: skip
            table.add_column(col, justify="right")
        for r in rows:
            table.add_row(
                r["pattern"], r["layout"], r["outliers"] or "-", "yes" if r["bit_exact"] else "NO",
                f"{r['metadata_bits_per_element']:.3f}", f"{r['total_bits_per_element']:.3f}",
                f"{r['encode_s']:.2f}", f"{r['decode_s']:.2f}",
            )  # fmt: skip
        Console().print(table)
    return {"format_table": [r.as_dict() for r in format_table()], "round_trip": rows}


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def run_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="Results folder")] = Path(
        "results"
    ),
    model: Annotated[
        str, typer.Option(help="smollm2, gemma3-270m or a Hugging Face model folder")
    ] = "smollm2",
    patterns: Annotated[str, typer.Option(help="N:M patterns, comma-separated")] = "2:4,8:16",
    methods: Annotated[
        str, typer.Option(help="pruning methods: magnitude, wanda, sparsegpt")
    ] = "wanda,sparsegpt",
    variants: Annotated[
        str | None,
        typer.Option(
            help="per method x pattern: base, vc, outliers, outliers+vc; METHOD/VARIANT for one "
            f"method only (default {FULL['variants']}; quick {QUICK['variants']})"
        ),
    ] = None,
    arch: Annotated[
        list[str] | None,
        typer.Option("--arch", help="preset name or TOML path, repeatable (default: all presets)"),
    ] = None,
    outliers: Annotated[str, typer.Option(help="K:256 outliers of the outlier variants")] = (
        "16:256"
    ),
    calib: Annotated[
        int | None,
        typer.Option(help=f"calibration samples (default {FULL['calib']}; quick {QUICK['calib']})"),
    ] = None,
    seqlen: Annotated[
        int | None,
        typer.Option(
            help=f"tokens per sample and eval window (default {FULL['seqlen']}; "
            f"quick {QUICK['seqlen']})"
        ),  # fmt: skip
    ] = None,
    eval_windows: Annotated[
        int | None,
        typer.Option(
            help=f"perplexity windows per corpus (default {FULL['eval_windows']}; quick "
            f"{QUICK['eval_windows']})"
        ),  # fmt: skip
    ] = None,
    tokens: Annotated[
        int | None, typer.Option(help=f"simulated prefill tokens (default {FULL['tokens']})")
    ] = None,
    size: Annotated[
        int | None,
        typer.Option(
            help=f"rows = cols of the round-trip matrix (default {FULL['size']}; "
            f"quick {QUICK['size']})"
        ),  # fmt: skip
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="small calibration/evaluation (minutes on 2 cores)")
    ] = False,
    formats_only: Annotated[
        bool, typer.Option("--formats-only", help="only the format table and the round trip")
    ] = False,
    force: Annotated[
        bool, typer.Option("--no-cache", "--force", help="recompute every step")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress output")] = False,
) -> None:
    """Run the main job: prune -> evaluate -> encode -> simulate, then results.json,
    report.md and plots in OUTPUT (default results/). Finished steps are reused."""
    from .run_job import run_job
    from .run_plan import RunSettings, check_settings, load_archs, split_list

    base = QUICK if quick else FULL

    def pick(value: int | None, name: str) -> int:
        return int(base[name]) if value is None else value

    try:
        settings = RunSettings(
            model=model,
            patterns=split_list(patterns, "patterns"),
            methods=split_list(methods, "methods"),
            variants=split_list(variants or base["variants"], "variants"),
            archs=tuple(arch or ()),
            calib=pick(calib, "calib"),
            seqlen=pick(seqlen, "seqlen"),
            eval_windows=pick(eval_windows, "eval_windows"),
            tokens=pick(tokens, "tokens"),
            size=pick(size, "size"),
            outliers=outliers,
            quick=quick,
        )
        check_settings(settings)
        archs = {} if formats_only else load_archs(settings.archs)
        if output.exists() and not output.is_dir():
            raise RunError(f"--output {output}: exists and is not a folder")
        model_path = None if formats_only else resolve(model)
    except RunError as err:
        _fail(str(err))
        return
    from nmlab.formats import FormatError
    from nmlab.pruning.errors import PruningError
    from nmlab.simulator.errors import SimulatorError

    try:
        run_job(settings, archs, model_path, output, formats_only, force, quiet)
    except (RunError, PruningError, SimulatorError, FormatError) as err:
        _fail(str(err), code=1)


def resolve(model: str) -> Path:
    """The model folder (known names are converted once to the cache), or a RunError."""
    from nmlab.pruning.errors import PruningError
    from nmlab.pruning.models import resolve_model

    try:
        return Path(resolve_model(model)).resolve()
    except PruningError as err:
        raise RunError(f"--model: {err}") from None


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
