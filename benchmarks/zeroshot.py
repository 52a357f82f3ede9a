"""Zero-shot multiple-choice accuracy of dense SmolLM2-135M-Instruct on BIG-bench tasks.

The anchor: about 0.46 length-normalised accuracy on 300 social_iqa questions (chance 0.33).
Prints one JSON line per task (acc, acc_norm, standard errors, n, wall time, questions/s)
and, for several tasks, one line with the means.

    python benchmarks/zeroshot.py                  # social_iqa, 300 questions (seed 0 subset)
    python benchmarks/zeroshot.py --quick          # social_iqa, 30 questions
    python benchmarks/zeroshot.py --all --limit 100  # the five default tasks, 100 each
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from nmlab.pruning.models import load_model, resolve_model
from nmlab.pruning.tasks import DEFAULT_TASKS, ensure_tasks, parse_task, subset
from nmlab.pruning.zeroshot import BATCH, SUBSET_RULE, evaluate_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--tasks", default="social_iqa", help="comma-separated")
    parser.add_argument("--all", action="store_true", help="the five default tasks")
    parser.add_argument("--limit", type=int, default=300, help="questions per task")
    parser.add_argument("--quick", action="store_true", help="30 questions per task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=BATCH, help="questions per forward")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = list(DEFAULT_TASKS) if args.all else args.tasks.split(",")
    limit = 30 if args.quick else args.limit

    paths = ensure_tasks(names)
    t0 = time.perf_counter()
    model, tokenizer = load_model(resolve_model(args.model), progress=False)
    load_s = time.perf_counter() - t0
    rows = []
    for name in names:
        questions, _ = parse_task(paths[name])
        chosen = subset(questions, limit, args.seed)
        start = time.perf_counter()
        r = evaluate_task(model, tokenizer, chosen, batch_size=args.batch, desc=name)
        wall = time.perf_counter() - start
        row = {
            "model": args.model,
            "task": name,
            **{k: r[k] for k in ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "n")},
            "chance": round(r["chance"], 4),
            "questions_total": len(questions),
            "subset": f"limit {limit}, seed {args.seed}: {SUBSET_RULE}",
            "wall_s": round(wall, 1),
            "questions_per_s": round(r["n"] / wall, 3),
            "load_s": round(load_s, 1),
            "batch": args.batch,
            "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if len(rows) > 1:
        mean = {
            "model": args.model,
            "tasks": names,
            "limit": limit,
            "mean_acc": sum(r["acc"] for r in rows) / len(rows),
            "mean_acc_norm": sum(r["acc_norm"] for r in rows) / len(rows),
            "wall_s": round(sum(r["wall_s"] for r in rows), 1),
        }
        print(json.dumps(mean), flush=True)


if __name__ == "__main__":
    main()
