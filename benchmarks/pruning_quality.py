"""Perplexity of SmolLM2-135M pruned by magnitude / Wanda / SparseGPT to 50% unstructured,
2:4, 4:8 and 8:16, on the wiki and shakespeare evaluation splits; plus SparseGPT wall time
per layer against the reference implementation (llm-compressor) on the same layer.

Prints one JSON line per row and writes benchmarks/results/pruning_quality.md (rewritten
after every row, so an interrupted run keeps what it measured).

    python benchmarks/pruning_quality.py            # full: 128 x 2048 calibration, all windows
    python benchmarks/pruning_quality.py --quick    # CI smoke: tiny settings, two rows
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from nmlab.pruning.data import calibration_samples, corpus_tokens, eval_windows
from nmlab.pruning.masks import parse_pattern
from nmlab.pruning.methods import LayerStats, make_method
from nmlab.pruning.models import load_model, resolve_model
from nmlab.pruning.perplexity import bos_for, perplexity
from nmlab.pruning.reference import load_reference, reference_sparsify
from nmlab.pruning.sequential import (
    _add_stats,
    _block_out,
    block_linears,
    capture_block_inputs,
    decoder_layers,
    prune_sequential,
)
from nmlab.pruning.sparsegpt import sparsify_weight

METHODS = ("sparsegpt", "wanda", "magnitude")
PATTERNS = ("2:4", "4:8", "8:16", "50%")
CORPORA = ("wiki", "shakespeare")


def reference_timing(model, samples, layer: str, patterns, repeats: int) -> list[dict]:
    """Our sparsify_weight vs the reference on one layer of block 0, same W and H."""
    ref = load_reference()
    name = f"{_prefix(model)}.0.{layer}"
    mod = block_linears(model)[name]
    x, kwargs = capture_block_inputs(model, samples)
    stats = LayerStats()
    hook = mod.register_forward_hook(lambda _m, inp, _o: _add_stats(stats, inp[0], "hessian"))
    with torch.no_grad():
        for j in range(x.shape[0]):
            _block_out(decoder_layers(model)[0], x[j : j + 1], kwargs[0])
    hook.remove()
    W, H = mod.weight.detach().clone(), stats.H
    rows = []
    for text in patterns:
        pattern = parse_pattern(text)
        ours_s, ref_s = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            ours, mask = sparsify_weight(W, H, pattern)
            ours_s.append(time.perf_counter() - t)
            if ref is not None:
                t = time.perf_counter()
                theirs, ref_mask = reference_sparsify(W, H, pattern)
                ref_s.append(time.perf_counter() - t)
        row = {
            "kind": "timing",
            "layer": name,
            "shape": list(W.shape),
            "pattern": text,
            "ours_s": round(min(ours_s), 3),
        }
        if ref is not None:
            row.update(
                ref_s=round(min(ref_s), 3),
                ratio=round(min(ours_s) / min(ref_s), 3),
                same_mask=bool(torch.equal(mask, ref_mask)),
                max_abs_diff=float((ours - theirs).abs().max()),
            )
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _prefix(model) -> str:
    layers = decoder_layers(model)
    return next(n for n, m in model.named_modules() if m is layers)


def write_table(path: Path, command: str, settings: dict, rows: list[dict], timing: list[dict]):
    lines = [
        f"# Pruning quality: {settings['model']}",
        "",
        f"Command: `{command}`",
        "",
        "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()),
        "",
        "| method | pattern | wiki ppl | shakespeare ppl | zero-shot acc / acc_norm "
        "| sparsity | prune s | eval s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        zs = r.get("zeroshot")
        zs_cell = f"{zs['mean_acc']:.3f} / {zs['mean_acc_norm']:.3f}" if zs else ""
        lines.append(
            f"| {r['method']} | {r['pattern']} | {r['ppl']['wiki']:.2f} | "
            f"{r['ppl']['shakespeare']:.2f} | {zs_cell} | {r['sparsity']:.3f} | "
            f"{r['prune_s']:.0f} | {r['eval_s']:.0f} |"
        )
    if timing:
        lines += [
            "",
            "SparseGPT on one layer, ours vs the reference (llm-compressor sgpt_sparsify), "
            "same W and H, best of the repeats:",
            "",
            "| layer | shape | pattern | ours s | reference s | ratio | same mask | max abs diff |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for t in timing:
            lines.append(
                f"| {t['layer']} | {t['shape'][0]}x{t['shape'][1]} | {t['pattern']} | "
                f"{t['ours_s']:.2f} | {t.get('ref_s', float('nan')):.2f} | "
                f"{t.get('ratio', float('nan')):.2f} | {t.get('same_mask', '-')} | "
                f"{t.get('max_abs_diff', float('nan')):.2e} |"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--calib", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--eval-windows", type=int, default=None)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--patterns", default=",".join(PATTERNS))
    ap.add_argument("--timing-layer", default="mlp.down_proj")
    ap.add_argument("--timing-repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--tasks", default=None, help="zero-shot BIG-bench tasks, comma-separated")
    ap.add_argument("--tasks-limit", type=int, default=50, help="questions per zero-shot task")
    ap.add_argument("--quick", action="store_true", help="CI smoke: 2 x 64 tokens, 2 rows")
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "pruning_quality.md"
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.calib, args.seqlen, args.eval_windows = 2, 64, 2
        args.methods, args.patterns, args.timing_repeats = "sparsegpt", "2:4,8:16", 1
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python benchmarks/pruning_quality.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    settings = {
        "model": args.model,
        "calib": f"{args.calib}x{args.seqlen}",
        "eval": f"{args.eval_windows or 'all'} windows x {args.seqlen} per corpus",
        **(
            {"zeroshot": f"mean over {args.tasks}, {args.tasks_limit} questions each (seed 0)"}
            if args.tasks
            else {}
        ),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }

    model, tokenizer = load_model(resolve_model(args.model), progress=False)
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    samples = calibration_samples(
        corpus_tokens("wiki", "calib", tokenizer), args.calib, args.seqlen
    )
    windows = {
        c: eval_windows(corpus_tokens(c, "eval", tokenizer), args.seqlen, args.eval_windows)
        for c in CORPORA
    }

    bos = bos_for(model, tokenizer)  # None for SmolLM2
    if bos is not None:
        samples = torch.cat([torch.full_like(samples[:, :1], bos), samples[:, :-1]], dim=1)
    timing = reference_timing(
        model, samples, args.timing_layer, ["2:4", "8:16"], args.timing_repeats
    )
    rows: list[dict] = []

    def evaluate(method: str, pattern: str, sparsity: float, prune_s: float) -> None:
        t = time.perf_counter()
        ppl = {
            c: perplexity(model, w, progress=False, bos_token_id=bos) for c, w in windows.items()
        }
        row = {
            "kind": "ppl",
            "method": method,
            "pattern": pattern,
            "ppl": ppl,
            "sparsity": sparsity,
            "prune_s": round(prune_s, 1),
            "eval_s": round(time.perf_counter() - t, 1),
        }
        if args.tasks:
            from nmlab.pruning.zeroshot import zeroshot_metrics

            zs = zeroshot_metrics(
                model, tokenizer, args.tasks.split(","), args.tasks_limit, progress=False
            )
            row["zeroshot"] = {k: zs[k] for k in ("mean_acc", "mean_acc_norm", "limit")}
        rows.append(row)
        print(json.dumps(row), flush=True)
        write_table(args.out, command, settings, rows, timing)

    evaluate("dense", "-", 0.0, 0.0)
    for pattern in args.patterns.split(","):
        for method in args.methods.split(","):
            model.load_state_dict(dense)
            pat = parse_pattern(pattern)
            result = prune_sequential(model, samples, make_method(method, pat), progress=False)
            kept = sum(int(m.sum()) for m in result.masks.values())
            total = sum(m.numel() for m in result.masks.values())
            evaluate(method, pattern, 1 - kept / total, result.seconds)


if __name__ == "__main__":
    main()
