"""Ablation of issue 4 (Maximov et al., 2026, arXiv 2507.03052, outlier/SQ/VC/EBFT table):
perplexity and the MEASURED bits per element of the encoded file, row by row.

Rows, each a call of ``nmlab.pruning.pipeline.prune_model`` on top of one method
(wanda by default) for each pattern (2:4, 8:16):

    base            plain N:M
    +unstructured   16:256 budget of outliers, chosen freely per row
    +4:256 +8:256 +16:256   structured K:256 outliers
    +SQ +VC-weight +VC-output +SQ+VC +SQ+VC+EBFT   on top of 16:256 structured outliers

Bits per element come from the file itself: the pruned folder's linear weights are
encoded (fp16 values, the arch's layout, K:256 outliers from metrics.json) with
``simulator.model.encode_pruned_dir``, saved as one nmlab container (.safetensors), and
the file size in bits is divided by the number of encoded weight elements; the
breakdown is the container's per-stream byte counts.

Resumable: each finished row is appended as one JSON line to ``<out-md>.jsonl`` and a
rerun skips rows already there with the same settings. A row whose ``prune_model``
keywords are not supported yet is printed as skipped (never recorded, so a later run
retries it). The Markdown is rewritten after every row.

    python benchmarks/ablation.py --patterns 8:16 --rows base,+16:256
    python benchmarks/ablation.py --model /tmp/tiny --calib 1 --seqlen 64 --eval-windows 1 \\
        --rows base,+16:256 --out-md /tmp/ablation.md          # smoke test
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import inspect
import json
import os
import platform
import re
import shlex
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
PATTERNS = ("8:16", "2:4")
STRUCTURED = "16:256"  # the outliers under the SQ / VC / EBFT rows
SMOOTH_ALPHA = 0.5
COMBINED_VC = "weight"  # the VC mode of the +SQ+VC rows


@dataclass(frozen=True)
class Row:
    name: str
    outliers: str | None = None
    selection: str = "structured"
    smooth: float | None = None
    vc: str = "none"
    ebft: bool = False
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


ROWS = (
    Row("base", note="N:M only"),
    Row("+unstructured", STRUCTURED, "unstructured", note="16:256 budget, free positions"),
    Row("+4:256", "4:256"),
    Row("+8:256", "8:256"),
    Row("+16:256", STRUCTURED),
    Row("+SQ", STRUCTURED, smooth=SMOOTH_ALPHA, note="on 16:256"),
    Row("+VC-weight", STRUCTURED, vc="weight", note="on 16:256"),
    Row("+VC-output", STRUCTURED, vc="output", note="on 16:256"),
    Row("+SQ+VC", STRUCTURED, smooth=SMOOTH_ALPHA, vc=COMBINED_VC, note="on 16:256"),
    Row(
        "+SQ+VC+EBFT",
        STRUCTURED,
        smooth=SMOOTH_ALPHA,
        vc=COMBINED_VC,
        ebft=True,
        note="on 16:256",
    ),
)
ROW_NAMES = {r.name: r for r in ROWS}
ALIASES = {"+vc weight": "+VC-weight", "+vc output": "+VC-output", "+sq": "+SQ"}


def parse_rows(text: str) -> list[Row]:
    """Comma-separated row names, case-insensitive ("+VC weight" == "+VC-weight")."""
    by_key = {r.name.lower(): r for r in ROWS}
    chosen = []
    for part in text.split(","):
        key = part.strip().lower()
        key = ALIASES.get(key, key).lower().replace(" ", "-")
        if key not in by_key:
            raise SystemExit(f"unknown row {part!r}; rows: {', '.join(ROW_NAMES)}")
        chosen.append(by_key[key])
    return chosen


def row_kwargs(row: Row, args: argparse.Namespace) -> dict[str, Any]:
    """The prune_model keywords of a row: only those that differ from the defaults, so a
    row runs as soon as the keywords it needs exist."""
    kw: dict[str, Any] = {}
    if row.outliers is not None:
        kw["outliers"] = row.outliers
    if row.selection != "structured":
        kw["outlier_selection"] = row.selection
    if row.smooth is not None:
        kw["smooth"] = row.smooth
    if row.vc != "none":
        kw["vc"] = row.vc
    if row.ebft:
        kw["ebft_epochs"] = args.ebft_epochs
        if args.ebft_samples is not None:
            kw["ebft_samples"] = args.ebft_samples
    if args.tasks:
        kw["zeroshot_tasks"] = args.tasks.split(",")
        kw["zeroshot_limit"] = args.tasks_limit
    return kw


def unsupported(kwargs: dict[str, Any]) -> list[str]:
    """Keywords that prune_model does not accept (yet)."""
    from nmlab.pruning.pipeline import prune_model

    params = inspect.signature(prune_model).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return []
    return [k for k in kwargs if k not in params]


def common_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Settings shared by every row of a run (the resume key, with pattern and row)."""
    return {
        "model": args.model,
        "method": args.method,
        "calib": args.calib,
        "seqlen": args.seqlen,
        "eval_windows": args.eval_windows,
        "seed": args.seed,
        "tasks": args.tasks,
        **({"tasks_limit": args.tasks_limit} if args.tasks else {}),
        "arch": args.arch,
        "dtype": "float16",
    }


def row_settings(args: argparse.Namespace, pattern: str, row: Row) -> dict[str, Any]:
    settings = {**common_settings(args), "pattern": pattern, "row": row.name}
    if row.ebft:
        settings["ebft_epochs"] = args.ebft_epochs
        settings["ebft_samples"] = args.ebft_samples
    return settings


def _key(settings: dict[str, Any]) -> str:
    return json.dumps(settings, sort_keys=True)


def load_done(jsonl: Path) -> list[dict]:
    if not jsonl.is_file():
        return []
    rows = []
    for line in jsonl.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except ValueError:  # a line cut by a kill: ignore it, the row reruns
                continue
    return rows


def measure_bits(folder: Path, arch_name: str, container: Path) -> dict[str, Any]:
    """Encode the pruned linears (fp16) into one container file and measure it."""
    from nmlab.formats import save, stream_totals
    from nmlab.simulator.arch import load_arch
    from nmlab.simulator.model import encode_pruned_dir

    arch = load_arch(arch_name)
    t0 = time.perf_counter()
    tensors = encode_pruned_dir(folder, arch, "float16")
    save(container, tensors, extra={"source": folder.name})
    size = container.stat().st_size
    elements, streams = stream_totals(tensors.values())
    layouts = sorted({enc.layout for enc in tensors.values()})
    outliers = sorted({str(enc.outliers.pattern) for enc in tensors.values() if enc.outliers})
    per = {k: 8 * v / elements for k, v in streams.items()}
    return {
        "file_bytes": size,
        "elements": elements,
        "tensors": len(tensors),
        "bits_per_element": 8 * size / elements,
        "breakdown": {
            "values": per.get("values", 0.0),
            "nm_meta": per.get("meta", 0.0),
            "outlier_values": per.get("outlier_values", 0.0),
            "outlier_positions": per.get("outlier_positions", 0.0),
            "header": 8 * (size - sum(streams.values())) / elements,
        },
        "stream_bytes": streams,
        "layout": ",".join(layouts),
        "outlier_pattern": ",".join(outliers) or None,
        "encode_s": round(time.perf_counter() - t0, 1),
    }


def ebft_summary(ebft: Any) -> dict[str, float] | None:
    """Totals over the blocks of metrics.json's "ebft" entry (per-block MSE before and
    after, steps, seconds), when the pipeline recorded them."""
    blocks = ebft.get("blocks") if isinstance(ebft, dict) else None
    if not blocks:
        return None
    falls = [
        1 - b["mse_after"] / b["mse_before"]
        for b in blocks
        if b.get("mse_before") and b.get("mse_after") is not None
    ]
    return {
        "blocks": len(blocks),
        "seconds": round(sum(b.get("seconds", 0.0) for b in blocks), 1),
        "steps": sum(int(b.get("steps", 0)) for b in blocks),
        "mean_mse_fall": sum(falls) / len(falls) if falls else None,
    }


@functools.cache
def code_fingerprint() -> dict[str, str]:
    """The git commit and a hash of the pruning/ sources when this process first pruned
    (it imports them then, once; others may be editing them while the benchmark runs)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        head = ""
    h = hashlib.sha1()
    for f in sorted((root / "pruning").glob("*.py")):
        h.update(f.name.encode() + f.read_bytes())
    return {"git_head": head, "pruning_sha1": h.hexdigest()[:12]}


def run_row(args, pattern: str, row: Row, kwargs: dict[str, Any], command: str) -> dict:
    from nmlab.pruning.pipeline import prune_model

    settings = row_settings(args, pattern, row)
    digest = hashlib.sha1(_key({**settings, "kwargs": kwargs}).encode()).hexdigest()[:8]
    slug = "".join(c if c.isalnum() else "_" for c in f"{args.method}_{pattern}_{row.name}")
    folder = Path(args.work) / f"{slug}_{digest}"
    t0 = time.perf_counter()
    code_fingerprint()
    if (folder / "metrics.json").is_file():  # pruned by an earlier, interrupted run
        metrics = json.loads((folder / "metrics.json").read_text())
        reused = True
    else:
        metrics = prune_model(
            args.model,
            args.method,
            pattern,
            folder,
            calib=args.calib,
            seqlen=args.seqlen,
            eval_windows=args.eval_windows,
            seed=args.seed,
            progress=args.progress,
            **kwargs,
        )
        reused = False
    from nmlab.formats import FormatError
    from nmlab.simulator.errors import SimulatorError

    container = folder.parent / f"{folder.name}.nmlab.safetensors"
    bits, bits_error = None, None
    try:
        bits = measure_bits(folder, args.arch, container)
    except (FormatError, SimulatorError) as err:  # e.g. outliers that no K:256 <= 64 holds
        bits_error = str(err).strip().splitlines()[0]
    finally:
        if not args.keep_models and container.exists():
            container.unlink()
    zeroshot = metrics.get("zeroshot")
    record = {
        "settings": settings,
        "kwargs": kwargs,
        "note": row.note,
        "ppl": metrics["ppl"],
        "zeroshot_mean_acc": zeroshot.get("mean_acc") if isinstance(zeroshot, dict) else None,
        "zeroshot_mean_acc_norm": zeroshot.get("mean_acc_norm")
        if isinstance(zeroshot, dict)
        else None,
        "sparsity_total": metrics.get("sparsity_total"),
        "outliers": metrics.get("outliers"),
        "outliers_encoded": metrics.get("outliers_encoded"),
        "bits": bits,
        "bits_error": bits_error,
        "ebft": metrics.get("ebft"),
        "ebft_summary": ebft_summary(metrics.get("ebft")),
        "time_s": {
            **{k: metrics.get("time_s", {}).get(k) for k in ("prune", "eval")},
            "encode": bits["encode_s"] if bits else None,
            "row": round(time.perf_counter() - t0, 1),
        },
        "reused_pruned_folder": reused,
        "code": code_fingerprint(),
        "command": command,
        "host": {
            "threads": metrics.get("host", {}).get("threads"),
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
        },
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if not args.keep_models:
        shutil.rmtree(folder, ignore_errors=True)
    return record


# --- the Markdown -------------------------------------------------------------------


def _f(x: Any, fmt: str = ".2f") -> str:
    return "" if x is None else format(x, fmt)


def _ppl(rec: dict | None, corpus: str = "wiki") -> float | None:
    return None if rec is None else rec["ppl"].get(corpus)


def expectations(pattern: str, by_row: dict[str, dict]) -> list[str]:
    """The paper's expected shapes, each with whether it held here."""

    def verdict(cond: bool | None) -> str:
        return "not measured yet" if cond is None else ("held" if cond else "did NOT hold")

    def both(a: str, b: str) -> bool | None:  # a's ppl <= b's on both corpora
        if a not in by_row or b not in by_row:
            return None
        return all(
            _ppl(by_row[a], c) <= _ppl(by_row[b], c)
            for c in by_row[a]["ppl"]
            if c in by_row[b]["ppl"]
        )

    out = [
        f"- {pattern}: structured 16:256 outliers at least as good as unstructured with the "
        f"same count (ppl +16:256 <= +unstructured on both corpora): "
        f"{verdict(both('+16:256', '+unstructured'))}",
    ]
    if all(n in by_row for n in ("+4:256", "+8:256", "+16:256")):
        w = [_ppl(by_row[n]) for n in ("+4:256", "+8:256", "+16:256")]
        mono: bool | None = w[0] >= w[1] >= w[2]
    else:
        mono = None
    out.append(
        f"- {pattern}: more outliers, lower wiki ppl (4:256 >= 8:256 >= 16:256): {verdict(mono)}"
    )
    out.append(
        f"- {pattern}: any outliers beat none (+4:256 <= base on both corpora): "
        f"{verdict(both('+4:256', 'base'))}"
    )
    full = all(r.name in by_row for r in ROWS)
    best = None
    if "+SQ+VC+EBFT" in by_row:
        lowest = min(by_row, key=lambda n: _ppl(by_row[n]))
        best = (lowest == "+SQ+VC+EBFT") if full else (False if lowest != "+SQ+VC+EBFT" else None)
    tail = "" if full or best is False else " (not every row measured yet)"
    out.append(
        f"- {pattern}: +SQ+VC+EBFT has the lowest wiki ppl of all rows: {verdict(best)}{tail}"
    )
    return out


def _zs(r: dict) -> str:
    """Mean zero-shot acc / acc_norm of a row, blank when not measured."""
    if r.get("zeroshot_mean_acc") is None:
        return ""
    return f"{r['zeroshot_mean_acc']:.3f} / {r['zeroshot_mean_acc_norm']:.3f}"


def write_markdown(
    path: Path,
    command: str,
    args: argparse.Namespace,
    records: list[dict],
    skipped: list[dict],
    patterns: list[str],
) -> None:
    common = common_settings(args)
    mine = [r for r in records if {k: r["settings"].get(k) for k in common} == common]
    order = {r.name: i for i, r in enumerate(ROWS)}
    pats = patterns + sorted({r["settings"]["pattern"] for r in mine} - set(patterns))
    ebft_note = ", ".join(
        sorted(
            {
                f"{r['settings'].get('ebft_epochs')} epoch(s), samples "
                f"{r['settings'].get('ebft_samples') or 'all'}"
                for r in mine
                if "ebft_epochs" in r["settings"]
            }
        )
    )
    lines = [
        f"# Ablation: {args.model}, {args.method}",
        "",
        "Commands that produced these rows:",
        "",
        *[f"    {c}" for c in sorted({r.get("command", command) for r in mine})],
        "",
        "Rows are merged from "
        f"`{path.with_suffix('.jsonl').name}`"
        + "".join(f" and `{m}`" for m in args.merge)
        + " (every finished row with these settings; the latest line of a row wins; the "
        "command and code fingerprint of each row are in its JSON line).",
        "",
        "Settings: " + ", ".join(f"{k}={v}" for k, v in common.items()),
        f"calibration {args.calib} x {args.seqlen} tokens (wiki calib split); perplexity on "
        f"{args.eval_windows or 'all'} windows x {args.seqlen} tokens per corpus.",
        "",
        f"The +SQ, +VC-weight, +VC-output, +SQ+VC and +SQ+VC+EBFT rows are all ON TOP OF "
        f"{STRUCTURED} structured outliers. SQ = rebalancing with alpha {SMOOTH_ALPHA}; "
        f"+SQ+VC uses VC mode '{COMBINED_VC}'; EBFT: {ebft_note or 'not run yet'}. "
        "+unstructured keeps the same outlier count as 16:256 at free positions (stored in "
        "the smallest K:256 that holds them, `outliers_encoded`).",
        "",
        "Bits/element are measured on the encoded file: the pruned linear weights, fp16 "
        f"values, layout of arch `{args.arch}` (combinatorial rank), K:256 outliers in rank "
        "layout, one nmlab container (.safetensors); total = file size x 8 / encoded "
        "elements (header included). Dense fp16 = 16.00. Zero-shot = mean accuracy over the "
        "tasks in metrics.json (blank when not run).",
        "",
        "| pattern | row | ppl wiki | ppl shakespeare | zero-shot acc / acc_norm "
        "| bits/elem (file) "
        "| values | N:M meta | outlier values | outlier positions | header | outliers "
        "| prune s | row s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    shapes: list[str] = []
    notes: list[str] = []
    for pat in pats:
        by_row = {}
        for r in mine:
            if r["settings"]["pattern"] == pat:
                by_row[r["settings"]["row"]] = r  # the latest line wins
        for name in sorted(by_row, key=lambda n: order.get(n, 99)):
            r = by_row[name]
            b = r.get("bits")
            outl = r.get("outliers_encoded") or r.get("outliers") or "-"
            if b:
                bd = b["breakdown"]
                cells = (
                    f"{b['bits_per_element']:.3f} | {bd['values']:.3f} | {bd['nm_meta']:.3f} | "
                    f"{bd['outlier_values']:.3f} | {bd['outlier_positions']:.3f} | "
                    f"{bd['header']:.4f}"
                )
            else:
                why = re.sub(r"^.*?(outliers \d+:\d+)", r"\1", str(r.get("bits_error")))
                cells = f"not encodable ({why}) | | | | |"
            lines.append(
                f"| {pat} | {name} | {_f(r['ppl'].get('wiki'))} | "
                f"{_f(r['ppl'].get('shakespeare'))} | {_zs(r)} | "
                f"{cells} | {outl} | {_f(r['time_s'].get('prune'), '.0f')} | "
                f"{_f(r['time_s'].get('row'), '.0f')} |"
            )
        for s in skipped:
            if s["settings"]["pattern"] == pat and s["settings"]["row"] not in by_row:
                lines.append(
                    f"| {pat} | {s['settings']['row']} | skipped: {s['skipped']} "
                    "| | | | | | | | | | | |"
                )
        shapes += expectations(pat, by_row)
        for name, r in by_row.items():
            e = r.get("ebft_summary")
            if e:
                fall = e.get("mean_mse_fall")
                notes.append(
                    f"- {pat} {name}: EBFT over {e['blocks']} blocks, {e['steps']} steps, "
                    f"{e['seconds']:.0f} s; block output MSE fell by "
                    f"{'?' if fall is None else f'{100 * fall:.1f}%'} on average"
                )
    if notes:
        lines += ["", *notes]
    lines += ["", "Expected shapes from the paper, and whether they held here:", "", *shapes]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--patterns", default=",".join(PATTERNS))
    ap.add_argument("--method", default="wanda")
    ap.add_argument("--rows", default=",".join(r.name for r in ROWS))
    ap.add_argument("--calib", type=int, default=4)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--eval-windows", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ebft-epochs", type=int, default=1)
    ap.add_argument("--ebft-samples", type=int, default=None, help="default: all calib")
    ap.add_argument("--tasks", default=None, help="zero-shot tasks, passed as zeroshot_tasks")
    ap.add_argument("--tasks-limit", type=int, default=50, help="questions per zero-shot task")
    ap.add_argument("--arch", default="rank-8of16", help="simulator arch whose layout encodes")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out-md", type=Path, default=RESULTS / "ablation.md")
    ap.add_argument("--work", type=Path, default=Path("/tmp/nmlab_ablation"))
    ap.add_argument("--keep-models", action="store_true", help="keep pruned folders")
    ap.add_argument("--progress", action="store_true", help="progress bars on stderr")
    ap.add_argument(
        "--stop-at",
        default=None,
        help="UTC HH:MM after which no new row starts (a running row finishes)",
    )
    ap.add_argument(
        "--merge",
        type=Path,
        action="append",
        default=[],
        help="another results .jsonl whose rows are shown too (display only; repeatable)",
    )
    ap.add_argument("--render-only", action="store_true", help="write the Markdown, run no row")
    args = ap.parse_args(argv)
    if args.threads:
        os.environ["NMLAB_THREADS"] = str(args.threads)
        import torch

        torch.set_num_threads(args.threads)
    rows = parse_rows(args.rows)
    patterns = [p.strip() for p in args.patterns.split(",") if p.strip()]
    command = "python benchmarks/ablation.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    jsonl = args.out_md.with_suffix(".jsonl")
    records = load_done(jsonl)
    skipped: list[dict] = []
    shown = [r for extra in args.merge for r in load_done(extra)]

    def render() -> None:
        write_markdown(args.out_md, command, args, shown + records, skipped, patterns)

    if args.render_only:
        render()
        return
    for pattern in patterns:
        for row in rows:
            settings = row_settings(args, pattern, row)
            if any(_key(r["settings"]) == _key(settings) for r in records):
                print(json.dumps({"settings": settings, "done": "already in " + jsonl.name}))
                continue
            if args.stop_at and time.strftime("%H:%M", time.gmtime()) >= args.stop_at:
                print(json.dumps({"stopped": f"no new row after {args.stop_at} UTC"}))
                render()
                return
            kwargs = row_kwargs(row, args)
            missing = unsupported(kwargs)
            if missing:
                reason = "prune_model lacks keyword(s) " + ", ".join(missing)
                skipped.append({"settings": settings, "skipped": reason})
                print(json.dumps(skipped[-1]), flush=True)
                render()
                continue
            try:
                record = run_row(args, pattern, row, kwargs, command)
            except Exception as err:  # noqa: BLE001 - report it, go on with the next row
                # PruningError for a value not supported yet, or a bug in code being edited:
                # reported, never recorded, so a later run retries the row
                first = str(err).strip().splitlines()[0] if str(err).strip() else ""
                reason = f"{type(err).__name__}: {first}"
                skipped.append({"settings": settings, "skipped": reason})
                print(json.dumps(skipped[-1]), flush=True)
                traceback.print_exc(file=sys.stderr)
                render()
                continue
            with jsonl.open("a") as f:
                f.write(json.dumps(record) + "\n")
            records.append(record)
            print(json.dumps(record), flush=True)
            render()
    render()


if __name__ == "__main__":
    main()
