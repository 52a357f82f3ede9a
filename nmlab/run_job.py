"""The body of `nmlab run`: plan the steps, run or reuse each, write the results."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import nmlab

from .run_cache import StepCache, file_digest, make_key, model_identity
from .run_plan import (
    CANONICAL_LAYOUT,
    RunError,
    RunSettings,
    Variant,
    arch_layout,
    why_not,
)
from .run_steps import (
    CONTAINER,
    container_summary,
    run_dense,
    run_prune,
    run_simulate,
    run_transcode,
)


def command_line(s: RunSettings, output: Path, formats_only: bool) -> str:
    """The exact command that reproduces this run (every setting spelled out)."""
    parts = ["nmlab", "run", "--model", s.model, "--patterns", ",".join(s.patterns),
             "--methods", ",".join(s.methods), "--variants", ",".join(s.variants),
             "--outliers", s.outliers, "--calib", str(s.calib), "--seqlen", str(s.seqlen),
             "--eval-windows", str(s.eval_windows), "--tokens", str(s.tokens),
             "--size", str(s.size)]  # fmt: skip
    for a in s.archs:
        parts += ["--arch", a]
    if s.quick:
        parts.append("--quick")
    if formats_only:
        parts.append("--formats-only")
    parts += ["-o", str(output)]
    return " ".join(shlex.quote(p) for p in parts)


def arch_identity(arch: Any) -> dict[str, Any]:
    """What a simulation depends on: every arch field and the energy table's text."""
    from nmlab.simulator.arch import config_path

    return {"arch": arch.model_dump(mode="json"),
            "energy_table": file_digest(config_path(arch.energy_table))}  # fmt: skip


def arch_sources(refs: tuple[str, ...]) -> dict[str, str]:
    """{arch name: the TOML it came from} for --arch values (or every preset)."""
    from nmlab.simulator.arch import config_path, load_arch, preset_names

    return {load_arch(r).name: str(config_path(r)) for r in refs or tuple(preset_names())}


class Progress:
    """One line per step: [i/n] name ... reused | done in s."""

    def __init__(self, total: int, quiet: bool) -> None:
        from rich.console import Console

        self.total, self.quiet, self.i = total, quiet, 0
        self.console = Console(stderr=True, highlight=False)
        self.steps: list[dict[str, Any]] = []

    def run(self, cache: StepCache, step: str, key: str, name: str, make: Any) -> Path:
        self.i += 1
        if not self.quiet and not cache.has(step, key):
            self.console.print(f"[bold][{self.i}/{self.total}][/bold] {name} ...")
        t0 = time.perf_counter()
        folder, reused = cache.get_or_make(step, key, make)
        seconds = time.perf_counter() - t0
        if not self.quiet:
            state = "reused from cache" if reused else f"done in {seconds:.1f} s"
            self.console.print(f"[bold][{self.i}/{self.total}][/bold] {name}: {state}")
        computed = cache.done(step, key).get("seconds")
        self.steps.append({"step": step, "key": key, "name": name, "reused": reused,
                           "seconds": round(seconds, 2), "computed_s": computed})  # fmt: skip
        return folder


def run_job(
    s: RunSettings,
    archs: dict[str, Any],
    model_path: Path | None,
    output: Path,
    formats_only: bool = False,
    force: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    t_start = time.perf_counter()
    output.mkdir(parents=True, exist_ok=True)
    cache = StepCache(output / "cache", force=force)
    variants = [] if formats_only else [Variant("dense"), *s.pruned_variants()]

    # the plan: which arch runs which variant, in which layout
    runs = {(v.id, a): why_not(arch, v, s.dtype) for v in variants for a, arch in archs.items()}
    layouts = sorted({(v.id, arch_layout(arch, v)) for v in variants for a, arch in archs.items()
                      if runs[v.id, a] is None and arch_layout(arch, v)
                      not in (CANONICAL_LAYOUT, "dense")})  # fmt: skip
    n_sims = sum(r is None for r in runs.values())
    progress = Progress(1 + len(variants) + len(layouts) + n_sims, quiet)

    def formats_make(folder: Path) -> dict:
        from .run import formats_step

        doc = formats_step(s.size, quiet)
        (folder / "formats.json").write_text(json.dumps(doc, indent=1))
        return {}

    fkey = make_key("formats", {"size": s.size})
    folder = progress.run(cache, "formats", fkey, f"format table + {s.size}x{s.size} round trip",
                          formats_make)  # fmt: skip
    formats_doc = json.loads((folder / "formats.json").read_text())
    results: dict[str, Any] = {
        "nmlab_version": nmlab.__version__,
        "command": command_line(s, output, formats_only),
        "settings": s.as_dict(),
        "formats": formats_doc,
    }
    if formats_only:
        return _finish(results, output, progress, t_start, quiet)

    ident = model_identity(model_path)
    results["model"] = {"ref": s.model, "path": ident["path"]}
    eval_inputs = {"model": ident, "seqlen": s.seqlen, "eval_windows": s.eval_windows,
                   "dtype": s.dtype}  # fmt: skip
    prog = not quiet
    keys: dict[str, str] = {}
    folders: dict[str, Path] = {}
    for v in variants:
        if v.dense:
            key = make_key("dense", eval_inputs)
            step = "dense"

            def make(folder: Path) -> dict:
                return run_dense(folder, model_path, s.seqlen, s.eval_windows, prog)

            name = "evaluate + encode dense model"
        else:
            inputs = {**eval_inputs, "method": v.method, "pattern": v.pattern,
                      "outliers": v.outliers, "vc": v.vc, "calib": s.calib, "seed": s.seed,
                      "layout": CANONICAL_LAYOUT}  # fmt: skip
            key = make_key("prune", inputs)
            step = "prune"

            def make(folder: Path, v: Variant = v, key: str = key) -> dict:
                work = cache.work_folder("prune", key)
                return run_prune(folder, work, model_path, v, s.calib, s.seqlen,
                                 s.eval_windows, s.seed, s.dtype, prog)  # fmt: skip

            name = f"prune + evaluate + encode {v.label}"
        keys[v.id] = key
        folders[v.id] = progress.run(cache, step, key, name, make)

    containers: dict[tuple[str, str], tuple[str, Path]] = {}
    by_id = {v.id: v for v in variants}
    for v in variants:
        lay = "dense" if v.dense else CANONICAL_LAYOUT
        containers[v.id, lay] = (keys[v.id], folders[v.id] / CONTAINER)
    for vid, lay in layouts:
        v = by_id[vid]
        key = make_key("encode", {"source": keys[vid], "layout": lay})

        def make(folder: Path, v: Variant = v, lay: str = lay) -> dict:
            return run_transcode(folder, folders[v.id] / CONTAINER, v, lay)

        folder = progress.run(cache, "encode", key, f"encode {v.label} as {lay}", make)
        containers[vid, lay] = (key, folder / CONTAINER)

    sims: dict[tuple[str, str], Path] = {}
    for v in variants:
        for a, arch in archs.items():
            if runs[v.id, a] is not None:
                continue
            ckey, cpath = containers[v.id, arch_layout(arch, v)]
            key = make_key("simulate", {"container": ckey, "arch": arch_identity(arch),
                                        "tokens": s.tokens})  # fmt: skip

            def make(folder: Path, cpath: Path = cpath, arch: Any = arch) -> dict:
                return run_simulate(folder, cpath, arch, s.tokens)

            folder = progress.run(cache, "simulate", key, f"simulate {v.label} on {a}", make)
            sims[v.id, a] = folder / "sim.json"

    # assemble results.json
    rel = lambda p: str(Path(p).relative_to(output))  # noqa: E731
    out_variants = []
    for v in variants:
        metrics = json.loads((folders[v.id] / "metrics.json").read_text())
        lay = "dense" if v.dense else CANONICAL_LAYOUT
        cpath = containers[v.id, lay][1]
        summary = container_summary(cpath)
        entry = {
            "id": v.id, "label": v.label, "dense": v.dense, "method": v.method,
            "pattern": v.pattern, "kind": v.kind, "outliers": v.outliers, "vc": v.vc,
            "ppl": metrics["ppl"], "eval_windows": metrics.get("eval_windows"),
            "sparsity_total": metrics.get("sparsity_total"), "time_s": metrics.get("time_s"),
            "step_key": keys[v.id], "container": rel(cpath), "layout": lay, **summary,
            "sim": {}, "skipped_archs": {},
        }  # fmt: skip
        for a, arch in archs.items():
            reason = runs[v.id, a]
            if reason is not None:
                entry["skipped_archs"][a] = reason
                continue
            alay = arch_layout(arch, v)
            apath = containers[v.id, alay][1]
            sim = json.loads(sims[v.id, a].read_text())
            sim.update(
                layout=alay,
                container=rel(apath),
                bits_per_element=container_summary(apath)["bits_per_element"]["total"],
            )
            entry["sim"][a] = sim
        out_variants.append(entry)
    results["variants"] = out_variants
    sources = arch_sources(s.archs)
    results["archs"] = {
        a: {"source": sources.get(a, ""),
            "runs": [v.id for v in variants if runs[v.id, a] is None],
            "skipped": {v.id: runs[v.id, a] for v in variants if runs[v.id, a] is not None}}
        for a, arch in archs.items()
    }  # fmt: skip
    from .run_report import pareto_fronts

    results["pareto"] = pareto_fronts(results)
    return _finish(results, output, progress, t_start, quiet)


def _finish(
    results: dict[str, Any], output: Path, progress: Progress, t_start: float, quiet: bool
) -> dict[str, Any]:
    from .run_plots import make_plots
    from .run_report import render_markdown

    steps = progress.steps
    results["timings"] = {
        "argv": sys.argv,
        "total_s": round(time.perf_counter() - t_start, 2),
        "reused": sum(t["reused"] for t in steps),
        "computed": sum(not t["reused"] for t in steps),
        "computed_s": round(sum(t["computed_s"] or 0 for t in steps), 2),
        "steps": steps,
    }
    plots = make_plots(results, output) if results.get("variants") else []
    results["plots"] = plots
    tmp = output / "results.json.partial"
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(output / "results.json")
    if results.get("variants"):
        (output / "report.md").write_text(render_markdown(results, plots))
    if not quiet:
        t = results["timings"]
        progress.console.print(
            f"{t['computed']} steps computed, {t['reused']} reused from {output / 'cache'}; "
            f"wrote {output / 'results.json'}"
            + (f", {output / 'report.md'} and {len(plots)} plots" if plots else "")
            + f" in {t['total_s']:.0f} s"
        )
    if not all(r["bit_exact"] for r in results["formats"]["round_trip"]):
        raise RunError("a round trip was not bit-exact")
    return results
