"""Zero-shot multiple-choice accuracy: score each choice by its log-likelihood after the prompt.

Conventions (as lm-eval-harness scores multiple-choice tasks):

- Tokenisation: whitespace at the end of the prompt moves to the start of the choice
  (``"...A: "`` + ``"Yes"`` becomes ``"...A:"`` + ``" Yes"``), then ``prompt + choice`` is
  encoded whole and the choice's tokens are what follows the prompt's own encoding
  (no special tokens added). An empty prompt becomes the BOS token (else EOS).
- ``acc``: the choice with the highest summed log-likelihood. ``acc_norm``: the highest
  log-likelihood per character of the choice text (lm-eval-harness' ``acc_norm``: the
  character count of the choice, without the moved whitespace).
- A question is right when the picked choice has the highest target score; with several
  such choices, any of them counts. Ties in likelihood go to the first choice listed.
- Standard errors: sample standard deviation (ddof 1) of the 0/1 outcomes over sqrt(n).
- Chance: the mean over questions of (right choices) / (choices).

Batching: a group of questions (``BATCH``, longest prompts first) costs two forward
passes. The prompts, left-padded, fill one KV cache; then every choice of every question
continues from its own prompt's rows of that cache. A prompt is computed once, however many
choices it has, and the weights are read twice per group rather than once per choice.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .errors import PruningError
from .tasks import DEFAULT_TASKS, Question, check_names, ensure_tasks, parse_task, subset

# Questions per task for the zero-shot column of metrics.json and the quality tables.
METRICS_LIMIT = 100
BATCH = 8  # questions per forward pass
SHARED_MIN = 16  # tokens common to a batch's prompts worth a forward pass of their own
SUBSET_RULE = "first LIMIT indices of random.Random(SEED).shuffle, in file order (nested in LIMIT)"


def encode_pair(tokenizer: Any, context: str, choice: str) -> tuple[list[int], list[int]]:
    """(prompt tokens, choice tokens) split as lm-eval-harness does (see module doc)."""
    stripped = context.rstrip()
    continuation = context[len(stripped) :] + choice
    ctx = tokenizer.encode(stripped, add_special_tokens=False) if stripped else []
    whole = tokenizer.encode(stripped + continuation, add_special_tokens=False)
    return ctx, whole[len(ctx) :]


def _prefix_token(tokenizer: Any) -> int:
    for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    raise PruningError("the tokenizer has neither a BOS nor an EOS token for an empty prompt")


def _encode_question(
    tokenizer: Any, context: str, choices: Sequence[str], limit: int | None
) -> tuple[list[int], list[list[int]]]:
    pairs = [encode_pair(tokenizer, context, c) for c in choices]
    ctx = pairs[0][0] or [_prefix_token(tokenizer)]
    conts = [cont for _, cont in pairs]
    for choice, cont in zip(choices, conts, strict=True):
        if not cont:
            raise PruningError(f"choice {choice!r} encodes to no token")
    longest = max(len(c) for c in conts)
    if limit and len(ctx) + longest > limit:
        ctx = ctx[-(limit - longest) :]  # keep the end of the prompt, as lm-eval-harness does
    return ctx, conts


def _forward(model: Any, cache: Any = None, **inputs: Any) -> tuple[torch.Tensor, Any]:
    """(logits, cache): transformers 5.x renamed ``past_key_values`` to ``cache``."""
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    if cache is not None:
        inputs[name] = cache
    out = model(**inputs, use_cache=True)
    return out.logits, out[name] if name in out else None


def _common_start(seqs: list[list[int]], max_len: int) -> int:
    """Length of the longest common start of all ``seqs``, at most ``max_len``."""
    n, max_len = 0, min(max_len, *(len(s) for s in seqs))
    while n < max_len and all(s[n] == seqs[0][n] for s in seqs):
        n += 1
    return n


@torch.no_grad()
def score_batch(
    model: Any, tokenizer: Any, items: Sequence[tuple[str, Sequence[str]]]
) -> list[list[tuple[float, int, int]]]:
    """For each (context, choices): (log-likelihood, tokens, characters) of every choice.

    Two forward passes for the whole batch (three when the prompts share a long start):
    the prompts, left-padded, fill a KV cache (the last position's logits score each
    choice's first token); then every choice of every question continues from its own
    prompt's cache rows (``batch_select_indices``), right-padded, which causal attention
    never lets the real tokens see. Position ids count real tokens only, so padding
    changes nothing but float rounding. A start of at least ``SHARED_MIN`` tokens common
    to every prompt (a task's few-shot ``task_prefix``) runs once, before the rest.
    """
    limit = getattr(model.config, "max_position_embeddings", None)
    encoded = [_encode_question(tokenizer, ctx, choices, limit) for ctx, choices in items]
    device = next(model.parameters()).device
    ctxs = [ctx for ctx, _ in encoded]
    shared = _common_start(ctxs, max_len=min(len(c) for c in ctxs) - 1)
    cache = None
    if shared >= SHARED_MIN:
        _, cache = _forward(
            model, input_ids=torch.tensor([ctxs[0][:shared]], device=device), logits_to_keep=1
        )
        cache.batch_repeat_interleave(len(ctxs))
    else:
        shared = 0
    width = max(len(ctx) for ctx in ctxs) - shared
    ids = torch.zeros((len(ctxs), width), dtype=torch.long)
    mask = torch.zeros((len(ctxs), shared + width), dtype=torch.long)
    mask[:, :shared] = 1
    for g, ctx in enumerate(ctxs):
        ids[g, width - len(ctx) + shared :] = torch.tensor(ctx[shared:])
        mask[g, shared + width - len(ctx) + shared :] = 1
    positions = (mask.cumsum(1) - 1).clamp(min=0)[:, shared:]
    logits, cache = _forward(
        model,
        cache,
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        logits_to_keep=1,
    )
    first = F.log_softmax(logits[:, -1].float(), dim=-1)

    owner = [g for g, (_, conts) in enumerate(encoded) for _ in conts]  # question of each row
    flat = [c for _, conts in encoded for c in conts]
    loglik = [first[g, c[0]].item() for g, c in zip(owner, flat, strict=True)]
    cwidth = max(len(c) for c in flat) - 1  # the last token of a choice predicts nothing
    if cwidth > 0:
        rows = torch.tensor(owner)
        cache.batch_select_indices(rows.to(device))
        cids = torch.zeros((len(flat), cwidth), dtype=torch.long)
        for r, c in enumerate(flat):
            cids[r, : len(c) - 1] = torch.tensor(c[:-1])
        cmask = torch.cat([mask[rows], torch.ones((len(flat), cwidth), dtype=torch.long)], 1)
        cpos = mask.sum(1)[rows, None] + torch.arange(cwidth)[None, :]
        logits, _ = _forward(
            model,
            cache,
            input_ids=cids.to(device),
            attention_mask=cmask.to(device),
            position_ids=cpos.to(device),
        )
        logp = F.log_softmax(logits.float(), dim=-1)
        for r, c in enumerate(flat):
            if len(c) > 1:
                target = torch.tensor(c[1:], device=device)[:, None]
                loglik[r] += logp[r, : len(c) - 1].gather(1, target).sum().item()

    results, r = [], 0
    for (_, choices), (_, conts) in zip(items, encoded, strict=True):
        lengths = zip(loglik[r : r + len(conts)], conts, choices, strict=True)
        results.append([(ll, len(c), len(ch)) for ll, c, ch in lengths])
        r += len(conts)
    return results


def score_choices(
    model: Any, tokenizer: Any, context: str, choices: Sequence[str]
) -> list[tuple[float, int, int]]:
    """(log-likelihood, tokens, characters) of each choice given ``context``: the prompt
    runs once, the choices as one batch continuing from its KV cache."""
    return score_batch(model, tokenizer, [(context, choices)])[0]


def _mean_stderr(hits: list[float]) -> tuple[float, float | None]:
    n = len(hits)
    mean = sum(hits) / n
    if n < 2:
        return mean, None
    var = sum((h - mean) ** 2 for h in hits) / (n - 1)
    return mean, math.sqrt(var / n)


def evaluate_task(
    model: Any,
    tokenizer: Any,
    questions: Sequence[Question],
    batch_size: int = BATCH,
    desc: str = "zero-shot",
    progress: bool = True,
) -> dict[str, Any]:
    """acc, acc_norm (per character), their standard errors (None when n < 2), n, chance.

    Questions run ``batch_size`` at a time, longest prompts first (less padding)."""
    if not questions:
        raise PruningError("no question to evaluate")
    if batch_size < 1:
        raise PruningError(f"batch size must be at least 1, got {batch_size}")
    start = time.perf_counter()
    order = sorted(range(len(questions)), key=lambda i: -len(questions[i].context))
    scores: list[list[tuple[float, int, int]]] = [[] for _ in questions]
    with tqdm(total=len(questions), desc=desc, disable=not progress, leave=False) as bar:
        for b in range(0, len(order), batch_size):
            chunk = order[b : b + batch_size]
            items = [(questions[i].context, questions[i].choices) for i in chunk]
            for i, scored in zip(chunk, score_batch(model, tokenizer, items), strict=True):
                scores[i] = scored
            bar.update(len(chunk))
    hits, hits_norm, chance = [], [], []
    for q, scored in zip(questions, scores, strict=True):
        raw = [ll for ll, _, _ in scored]
        norm = [ll / max(chars, 1) for ll, _, chars in scored]
        right = q.correct
        hits.append(float(raw.index(max(raw)) in right))
        hits_norm.append(float(norm.index(max(norm)) in right))
        chance.append(len(right) / len(q.choices))
    acc, acc_se = _mean_stderr(hits)
    acc_norm, acc_norm_se = _mean_stderr(hits_norm)
    return {
        "acc": acc,
        "acc_stderr": acc_se,
        "acc_norm": acc_norm,
        "acc_norm_stderr": acc_norm_se,
        "n": len(questions),
        "chance": sum(chance) / len(chance),
        "time_s": round(time.perf_counter() - start, 2),
    }


def zeroshot_metrics(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[str] = DEFAULT_TASKS,
    limit: int | None = METRICS_LIMIT,
    seed: int = 0,
    batch_size: int = BATCH,
    progress: bool = True,
) -> dict[str, Any]:
    """Every task on a loaded model; ``mean_acc_norm`` (and ``mean_acc``) over tasks."""
    names = check_names(list(tasks))
    if limit is not None and limit < 1:
        raise PruningError(f"limit must be at least 1, got {limit}")
    paths = ensure_tasks(names)
    per_task: dict[str, Any] = {}
    for name in names:
        questions, skipped = parse_task(paths[name])
        chosen = subset(questions, limit, seed)
        result = evaluate_task(model, tokenizer, chosen, batch_size, desc=name, progress=progress)
        per_task[name] = {**result, "questions_total": len(questions), "skipped": skipped}
    return {
        "tasks": per_task,
        "mean_acc": sum(r["acc"] for r in per_task.values()) / len(per_task),
        "mean_acc_norm": sum(r["acc_norm"] for r in per_task.values()) / len(per_task),
        "limit": limit,
        "seed": seed,
        "subset": SUBSET_RULE if limit is not None else "all questions",
    }


def run_zeroshot(
    model_name_or_path: str,
    tasks: Sequence[str],
    limit: int | None,
    seed: int = 0,
    batch_size: int = BATCH,
    progress: bool = True,
) -> dict[str, Any]:
    """Load a model (a known name or a HF folder) and run ``zeroshot_metrics`` on it.

    Inputs are checked (task names, limit, model) and the task files fetched before the
    model loads, so bad input fails fast with a PruningError.
    """
    from .models import load_model, resolve_model

    names = check_names(list(tasks))
    if limit is not None and limit < 1:
        raise PruningError(f"limit must be at least 1, got {limit}")
    if batch_size < 1:
        raise PruningError(f"batch size must be at least 1, got {batch_size}")
    folder = resolve_model(model_name_or_path)
    ensure_tasks(names)
    model, tokenizer = load_model(folder, progress=progress)
    result = zeroshot_metrics(model, tokenizer, names, limit, seed, batch_size, progress)
    return {"model": str(model_name_or_path), **result}
