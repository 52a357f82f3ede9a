"""`nmlab sweep SPEC.toml`: design-space sweeps of the simulator, run on Dask.

A spec names a base architecture, the axes to vary (dotted paths into the
architecture TOML, e.g. ``array.rows`` or ``sparse.decoders.0.groups_per_cycle``),
the weight formats and token counts, and the layer shapes. Every combination is
one point; the points run on a ``dask.distributed`` LocalCluster (or an existing
cluster at ``--scheduler``) and come back as one table plus plots.
"""

from __future__ import annotations

import copy
import csv
import itertools
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

# Linear layers of one SmolLM2-135M decoder block ([out, in]); the model has 30 of them.
SMOLLM2_LAYERS = {
    "q_proj": (576, 576), "k_proj": (192, 576), "v_proj": (192, 576), "o_proj": (576, 576),
    "gate_proj": (1536, 576), "up_proj": (1536, 576), "down_proj": (576, 1536),
}  # fmt: skip
LAYER_PRESETS = {"smollm2": (SMOLLM2_LAYERS, 30)}


class SweepError(ValueError):
    """A bad sweep spec; the message is one readable line."""


@dataclass(frozen=True)
class Spec:
    arch: str
    base: dict[str, Any]
    axes: dict[str, list[Any]]
    formats: list[tuple[str, str]]  # (pattern, layout)
    tokens: list[int]
    dtype: str
    layers: dict[str, tuple[int, int]]
    repeat: int


def load_spec(path: str | Path) -> Spec:
    from nmlab.simulator.arch import config_path
    from nmlab.simulator.errors import SimulatorError

    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SweepError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as err:
        raise SweepError(f"{path}: invalid TOML ({err})") from None
    sweep = raw.get("sweep")
    if not isinstance(sweep, dict):
        raise SweepError(f"{path}: needs a [sweep] table")
    try:
        arch_path = config_path(str(sweep.get("arch", "rank-8of16")))
    except SimulatorError as err:
        raise SweepError(str(err)) from None
    base = tomllib.loads(arch_path.read_text())
    axes = sweep.get("axes", {})
    if not isinstance(axes, dict) or not all(isinstance(v, list) and v for v in axes.values()):
        raise SweepError(f"{path}: [sweep.axes] maps dotted arch fields to non-empty lists")
    for key in axes:
        _set(copy.deepcopy(base), key, axes[key][0])  # fails early on a bad path
    formats = []
    for text in sweep.get("formats", ["dense", "2:4/rank", "8:16/rank"]):
        pattern, _, layout = str(text).partition("/")
        formats.append((pattern, layout or ("dense" if pattern == "dense" else "rank")))
    tokens = sweep.get("tokens", [1, 2048])
    if not (isinstance(tokens, list) and tokens and all(type(t) is int and t > 0 for t in tokens)):
        raise SweepError(f"{path}: tokens must be a non-empty list of positive integers")
    layers_spec = sweep.get("layers", "smollm2")
    if isinstance(layers_spec, str):
        if layers_spec not in LAYER_PRESETS:
            raise SweepError(f"{path}: unknown layer preset {layers_spec!r} (smollm2)")
        layers, repeat = LAYER_PRESETS[layers_spec]
    else:
        try:
            layers = {str(x["name"]): (int(x["out"]), int(x["in"])) for x in layers_spec}
        except (KeyError, TypeError, ValueError):
            raise SweepError(
                f"{path}: layers is a preset name or a list of {{name, out, in}}"
            ) from None
        repeat = int(sweep.get("repeat", 1))
    return Spec(str(sweep.get("arch", "rank-8of16")), base, axes, formats, tokens,
                str(sweep.get("dtype", "float16")), dict(layers), repeat)  # fmt: skip


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set a dotted field (list items by index) of a nested TOML dict."""
    *parents, leaf = dotted.split(".")
    node: Any = tree
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.get(part)
        if node is None:
            raise SweepError(f"axis {dotted!r}: no field {part!r} in the architecture")
    if isinstance(node, list):
        node[int(leaf)] = value
    elif isinstance(node, dict) and leaf in node:
        node[leaf] = value
    else:
        raise SweepError(f"axis {dotted!r}: no field {leaf!r} in the architecture")


def points(spec: Spec) -> list[dict[str, Any]]:
    """Every combination of axis values, formats and token counts."""
    keys = list(spec.axes)
    out = []
    for values in itertools.product(*(spec.axes[k] for k in keys)):
        for (pattern, layout), tokens in itertools.product(spec.formats, spec.tokens):
            out.append({**dict(zip(keys, values, strict=True)), "pattern": pattern,
                        "layout": layout, "tokens": tokens})  # fmt: skip
    return out


def evaluate(point: dict[str, Any], spec: Spec, workloads: dict) -> dict[str, Any]:
    """Simulate one point: all layers of one block, scaled by the block count."""
    from nmlab.simulator.arch import parse_arch
    from nmlab.simulator.errors import SimulatorError
    from nmlab.simulator.simulate import simulate

    arch_dict = copy.deepcopy(spec.base)
    for key in spec.axes:
        _set(arch_dict, key, point[key])
    row = dict(point)
    try:
        arch = parse_arch(arch_dict, f"{spec.arch} with {', '.join(spec.axes)}")
        reports = [simulate(arch, wl) for wl in workloads[(point["pattern"], point["layout"],
                                                             point["tokens"])]]  # fmt: skip
    except SimulatorError as err:
        row["error"] = str(err)
        return row
    row["cycles"] = spec.repeat * sum(r.cycles for r in reports)
    row["stall_cycles"] = spec.repeat * sum(sum(r.stall_cycles.values()) for r in reports)
    row["energy_uj"] = spec.repeat * sum(r.energy_pj["total"] for r in reports) / 1e6
    row["dram_bytes"] = spec.repeat * sum(r.traffic_bytes["dram"]["total"] for r in reports)
    row["cycles_per_token"] = row["cycles"] / point["tokens"]
    row["energy_uj_per_token"] = row["energy_uj"] / point["tokens"]
    return row


def build_workloads(spec: Spec) -> dict:
    """Encode each layer once per format with the real codec; workers only simulate."""
    from nmlab.simulator.errors import SimulatorError
    from nmlab.simulator.workload import Workload, synthetic_encoded

    workloads = {}
    for (pattern, layout), tokens in itertools.product(spec.formats, spec.tokens):
        try:
            encoded = {name: synthetic_encoded(o, i, pattern, layout, spec.dtype)
                       for name, (o, i) in spec.layers.items()}  # fmt: skip
        except SimulatorError as err:
            raise SweepError(f"format {pattern}/{layout}: {err}") from None
        workloads[(pattern, layout, tokens)] = [
            Workload.from_encoded(enc, tokens, name) for name, enc in encoded.items()
        ]
    return workloads


def run_sweep(spec: Spec, scheduler: str | None = None, workers: int = 2) -> list[dict]:
    """All points on Dask: a LocalCluster unless a scheduler address is given."""
    from dask.distributed import Client, LocalCluster, as_completed
    from tqdm import tqdm

    workloads = build_workloads(spec)
    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)  # fmt: skip
    client = Client(scheduler or cluster)
    try:
        spec_future = client.scatter(spec, broadcast=True)
        load_future = client.scatter(workloads, broadcast=True)
        futures = [client.submit(evaluate, p, spec_future, load_future, pure=False)
                   for p in points(spec)]  # fmt: skip
        rows = [f.result() for f in tqdm(as_completed(futures), total=len(futures), desc="sweep")]
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    keys = list(spec.axes) + ["pattern", "layout", "tokens"]
    return sorted(rows, key=lambda r: [str(r[k]) for k in keys])


def write_results(rows: list[dict], spec: Spec, out: Path) -> list[Path]:
    """results.json, results.csv and one plot per token count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    columns = sorted({k for r in rows for k in r}, key=lambda k: (k not in spec.axes, k))
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    plots = []
    ok = [r for r in rows if "error" not in r]
    axis_keys = list(spec.axes)
    for tokens in spec.tokens:
        fig, (ax_c, ax_e) = plt.subplots(1, 2, figsize=(12, 4.5))
        for pattern, layout in spec.formats:
            series = [r for r in ok if r["tokens"] == tokens and r["pattern"] == pattern
                      and r["layout"] == layout]  # fmt: skip
            labels = [", ".join(f"{k.split('.')[-1]}={r[k]}" for k in axis_keys) or "base"
                      for r in series]  # fmt: skip
            x = range(len(series))
            ax_c.plot(x, [r["cycles_per_token"] for r in series], marker="o",
                      label=f"{pattern} {layout}")  # fmt: skip
            ax_e.plot(x, [r["energy_uj_per_token"] for r in series], marker="o",
                      label=f"{pattern} {layout}")  # fmt: skip
            for ax in (ax_c, ax_e):
                ax.set_xticks(list(x), labels, rotation=30, ha="right", fontsize=8)
        ax_c.set_ylabel("cycles per token")
        ax_e.set_ylabel("energy per token (uJ)")
        for ax in (ax_c, ax_e):
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        phase = "decode" if tokens == 1 else "prefill"
        fig.suptitle(f"{spec.arch}: {phase}, {tokens} token(s), {spec.repeat} x "
                     f"{len(spec.layers)} layers")  # fmt: skip
        fig.tight_layout()
        path = out / f"sweep_tokens{tokens}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        plots.append(path)
    return plots


def sweep_command(
    spec_path: Annotated[Path, typer.Argument(help="Sweep spec (TOML)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Results folder")] = Path(
        "results/sweep"
    ),
    scheduler: Annotated[
        str | None, typer.Option(help="Address of an existing Dask scheduler")
    ] = None,
    workers: Annotated[int, typer.Option(help="LocalCluster workers")] = 2,
) -> None:
    """Run a design-space sweep of the simulator on Dask; write a table and plots."""
    from nmlab.formats.cli import fail

    try:
        spec = load_spec(spec_path)
        if workers < 1:
            raise SweepError(f"--workers {workers}: must be at least 1")
        rows = run_sweep(spec, scheduler, workers)
    except SweepError as err:
        fail(str(err))
    plots = write_results(rows, spec, output)
    failed = sum("error" in r for r in rows)
    typer.echo(f"{len(rows)} points ({failed} not executable on this arch) -> {output}/")
    for p in plots:
        typer.echo(f"  {p}")


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep_command)
