"""The prune and eval flows behind the CLI and the benchmark (model walking lives in
:mod:`sequential`, the math in :mod:`scores`, :mod:`masks` and :mod:`sparsegpt`)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

from .errors import PruningError
from .masks import parse_pattern
from .methods import METHODS, make_method
from .models import load_model, resolve_model, save_model_dir

EVAL_CORPORA = ("wiki", "shakespeare")


def _threads() -> None:
    """``NMLAB_THREADS`` sets torch's thread count (1 is fastest on a busy shared CPU)."""
    import torch

    if os.environ.get("NMLAB_THREADS"):
        torch.set_num_threads(int(os.environ["NMLAB_THREADS"]))


def evaluate(
    model: Any,
    tokenizer: Any,
    seqlen: int,
    max_windows: int | None = None,
    corpora: tuple[str, ...] = EVAL_CORPORA,
    progress: bool = True,
) -> tuple[dict[str, float], dict[str, int]]:
    """Perplexity on each corpus's evaluation split; returns (ppl, windows used)."""
    from .data import corpus_tokens, eval_windows
    from .perplexity import bos_for, perplexity

    ppl, used = {}, {}
    bos = bos_for(model, tokenizer)
    for corpus in corpora:
        windows = eval_windows(corpus_tokens(corpus, "eval", tokenizer), seqlen, max_windows)
        ppl[corpus] = perplexity(
            model, windows, desc=f"ppl {corpus}", progress=progress, bos_token_id=bos
        )
        used[corpus] = int(windows.shape[0])
    return ppl, used


def eval_model(
    model_ref: str, seqlen: int = 2048, max_windows: int | None = None, progress: bool = True
) -> dict[str, Any]:
    """Perplexity of a model (known name or directory) on both corpora."""
    if seqlen < 2:
        raise PruningError(f"seqlen must be >= 2, got {seqlen}")
    _threads()
    path = resolve_model(model_ref)
    model, tokenizer = load_model(path, progress=progress)
    t0 = time.perf_counter()
    ppl, used = evaluate(model, tokenizer, seqlen, max_windows, progress=progress)
    return {
        "model": model_ref,
        "seqlen": seqlen,
        "ppl": ppl,
        "eval_windows": used,
        "time_s": round(time.perf_counter() - t0, 2),
    }


def _parse_outliers(text: str | None) -> int | None:
    """ "16:256" -> 16 (structured K:256 outliers); None -> None."""
    if text is None:
        return None
    k, _, block = text.partition(":")
    if not (k.isdigit() and block == "256" and 1 <= int(k) <= 64):
        raise PruningError(f"outliers {text!r}: expected K:256 with 1 <= K <= 64, e.g. 16:256")
    return int(k)


def partial_dir(out: Path) -> Path:
    """Where an unfinished run keeps its checkpoints: beside OUT, never inside it."""
    return out.parent / f".{out.name}.partial"


def prune_model(
    model_ref: str,
    method: str,
    pattern: str,
    out: str | os.PathLike[str],
    calib: int = 128,
    seqlen: int = 2048,
    eval_windows: int | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
    seed: int = 0,
    progress: bool = True,
    outliers: str | None = None,
    vc: str = "none",
    smooth: float | None = None,
    outlier_selection: str = "structured",
    ebft_epochs: int = 0,
    ebft_samples: int | None = None,
    zeroshot_tasks: list[str] | None = None,
    zeroshot_limit: int = 100,
) -> dict[str, Any]:
    """Prune a model and write OUT/ (model, masks, metrics.json) all at once at the end.

    ``smooth``: SmoothQuant rebalancing strength α per block (None: off).
    ``outlier_selection``: K:256 ``structured`` outliers, or the same count per row
    chosen freely (``unstructured``; metrics.json then names the K':256 that holds them).
    ``ebft_epochs`` > 0: blockwise fine-tuning (EBFT) of each pruned block on its first
    ``ebft_samples`` calibration samples (None: all). ``zeroshot_tasks``: BIG-bench tasks
    scored after perplexity, ``zeroshot_limit`` questions each.

    Every input is checked before work starts (task files included); OUT/ appears only
    when complete (it is assembled beside it and renamed). A run killed midway resumes
    from its checkpoints.
    """
    import math

    import torch

    from .data import calibration_samples, corpus_tokens
    from .perplexity import bos_for
    from .sequential import Checkpoint, check_model, prune_sequential
    from .storage import save_masks

    out = Path(out)
    pat = parse_pattern(pattern)
    if method not in METHODS:
        raise PruningError(f"unknown method {method!r}: expected one of {', '.join(METHODS)}")
    k_outliers = _parse_outliers(outliers)
    # checks vc and the outlier selection before loading
    make_method(method, pat, blocksize, percdamp, k_outliers, vc, outlier_selection)
    if calib < 1 or seqlen < 2:
        raise PruningError(f"need --calib >= 1 and --seqlen >= 2, got {calib} and {seqlen}")
    if smooth is not None and not (math.isfinite(smooth) and 0.0 <= smooth <= 1.0):
        raise PruningError(f"--smooth {smooth}: alpha must be in [0, 1], e.g. 0.5")
    if ebft_epochs < 0:
        raise PruningError(f"--ebft-epochs must be >= 0, got {ebft_epochs}")
    if ebft_samples is not None and not 1 <= ebft_samples <= calib:
        raise PruningError(f"--ebft-samples must be in 1..{calib} (--calib), got {ebft_samples}")
    ebft = None
    if ebft_epochs > 0:
        from . import ebft as ebft_module  # only when asked for: it pulls in training code

        ebft = ebft_module.EbftConfig(epochs=ebft_epochs, samples=ebft_samples, seed=seed)
        ebft_module.check_config(ebft)
    tasks = None
    if zeroshot_tasks is not None:
        from .tasks import check_names, ensure_tasks

        tasks = check_names(list(zeroshot_tasks))
        if zeroshot_limit < 1:
            raise PruningError(f"--tasks-limit must be at least 1, got {zeroshot_limit}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PruningError(f"output {out} already exists and is not an empty folder")
    if tasks is not None:
        resolve_model(model_ref)  # a wrong model name fails before any download
        ensure_tasks(tasks)  # a missing task download fails before the model loads
    _threads()
    path = resolve_model(model_ref)
    model, tokenizer = load_model(path, progress=progress)
    check_model(model, pat)
    samples = calibration_samples(corpus_tokens("wiki", "calib", tokenizer), calib, seqlen, seed)
    bos = bos_for(model, tokenizer)
    if bos is not None:  # same start as at evaluation: BOS, then seqlen - 1 tokens
        samples = torch.cat([torch.full_like(samples[:, :1], bos), samples[:, :-1]], dim=1)

    settings = {
        "model": str(model_ref),
        "model_path": str(Path(path).resolve()),
        "method": method,
        "pattern": str(pat),
        "calib": calib,
        "seqlen": seqlen,
        "seed": seed,
        "blocksize": blocksize,
        "percdamp": percdamp,
        "outliers": outliers,
        "outlier_selection": outlier_selection,
        "vc": vc,
        "smooth": smooth,
        "ebft": None if ebft is None else _ebft_settings(ebft),
        "torch": torch.__version__,
    }
    work = partial_dir(out)
    checkpoint = Checkpoint(work / "checkpoint", settings)
    finetune = None
    if ebft is not None:
        finetune = _ebft_finetune(ebft, progress)
    result = prune_sequential(
        model,
        samples,
        make_method(method, pat, blocksize, percdamp, k_outliers, vc, outlier_selection),
        checkpoint,
        progress,
        smooth=smooth,
        finetune=finetune,
    )

    t0 = time.perf_counter()
    ppl, used = evaluate(model, tokenizer, seqlen, eval_windows, progress=progress)
    eval_s = time.perf_counter() - t0
    zeroshot = None
    if tasks is not None:
        from .zeroshot import zeroshot_metrics

        t1 = time.perf_counter()
        zeroshot = zeroshot_metrics(model, tokenizer, tasks, zeroshot_limit, progress=progress)
        zeroshot_s = time.perf_counter() - t1
    kept = sum(int(m.sum()) for m in result.masks.values())
    total = sum(m.numel() for m in result.masks.values())
    encoded = _outliers_encoded(model, result.masks, pat, outliers, outlier_selection)
    metrics = {
        **settings,
        "outliers_encoded": encoded,
        "ppl": ppl,
        "eval_windows": used,
        "eval_seqlen": seqlen,
        "bos_per_window": bos is not None,
        "sparsity_total": 1.0 - kept / total,
        "sparsity": {name: round(s, 6) for name, s in result.sparsity.items()},
        "time_s": {
            "prune": round(result.seconds, 2),
            "eval": round(eval_s, 2),
            "per_block": [round(s, 2) for s in result.block_seconds],
        },
        "resumed_from_block": result.resumed_from,
        "host": {
            "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "machine": platform.machine(),
        },
    }

    if ebft is not None:
        metrics["ebft"] = {**settings["ebft"], "blocks": result.finetune}
    if zeroshot is not None:
        metrics["zeroshot"] = zeroshot
        metrics["time_s"]["zeroshot"] = round(zeroshot_s, 2)

    final = work / "final"
    if final.exists():
        shutil.rmtree(final)
    save_model_dir(model, final)
    tokenizer.save_pretrained(final)
    save_masks(final / "masks.safetensors", result.masks)
    (final / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    if out.exists():
        out.rmdir()  # empty, checked above
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(final, out)
    shutil.rmtree(work, ignore_errors=True)
    return metrics


def _ebft_settings(config: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return json.loads(json.dumps(asdict(config)))  # tuples -> lists, as in JSON


def _ebft_finetune(config: Any, progress: bool) -> Any:
    """The driver's ``finetune`` callable running EBFT (:mod:`ebft`) with ``config``."""
    from .ebft import finetune_block  # it enables grad itself (the driver runs under no_grad)

    def finetune(layer: Any, x: Any, y_dense: Any, kwargs: dict, masks: dict) -> dict:
        return dict(finetune_block(layer, x, y_dense, kwargs, masks, config, progress=progress))

    return finetune


def _outliers_encoded(
    model: Any, masks: dict[str, Any], pattern: Any, outliers: str | None, selection: str
) -> str | None:
    """The K:256 that the codec's encoder needs for the outliers it will split off the
    saved weights (at least the requested K); None without outliers. It may exceed the
    codec's K <= 64 when unstructured outliers pile up in one block: it is recorded
    anyway, so that encoding says why it cannot hold them."""
    from .masks import NM
    from .outliers import encoded_outlier_k

    if outliers is None:
        return None
    if not isinstance(pattern, NM):
        return outliers
    k = _parse_outliers(outliers)
    assert k is not None
    params = dict(model.named_parameters())
    weights = [params[name].detach().float() for name in masks]
    need = max(k, encoded_outlier_k(weights, pattern.n, pattern.m))
    if selection == "structured" and need == k:
        return outliers
    return f"{need}:256"
