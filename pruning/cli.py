"""`nmlab prune` and `nmlab eval`: command-line glue for nmlab.pruning."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .errors import PruningError


def _fail(err: Exception) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(code=2)


def register(app: typer.Typer) -> None:
    """Add `prune` and `eval` to the `nmlab` app (torch is imported only when they run)."""

    @app.command("prune")
    def prune(
        model: str = typer.Option("smollm2", help="smollm2, gemma3-270m or a HF model folder"),
        method: str = typer.Option("sparsegpt", help="magnitude | wanda | sparsegpt"),
        pattern: str = typer.Option("8:16", help="N:M (2:4, 8:16 ...) or 50% (per row), 50%-layer"),
        out: Path = typer.Option(..., "-o", "--out", help="output folder (must not exist)"),
        calib: int = typer.Option(128, help="calibration samples"),
        seqlen: int = typer.Option(2048, help="tokens per calibration sample and eval window"),
        eval_windows: int | None = typer.Option(None, help="cap on perplexity windows per corpus"),
        blocksize: int = typer.Option(
            128, help="SparseGPT column block (rounded to a multiple of M)"
        ),
        percdamp: float = typer.Option(0.01, help="SparseGPT dampening, fraction of mean diag(H)"),
        seed: int = typer.Option(0, help="calibration sampling seed"),
        outliers: str | None = typer.Option(
            None, help="keep K salient weights per 256-block outside N:M, e.g. 16:256"
        ),
        outlier_selection: str = typer.Option(
            "structured",
            help="structured (K per 256-block) | unstructured (same count anywhere in a row)",
        ),
        vc: str = typer.Option("none", help="variance correction: none | weight | output"),
        smooth: float | None = typer.Option(
            None, help="SmoothQuant rebalancing before pruning, strength alpha (e.g. 0.5)"
        ),
        ebft_epochs: int = typer.Option(0, help="blockwise fine-tuning (EBFT) epochs; 0 = off"),
        ebft_samples: int | None = typer.Option(
            None, help="EBFT on the first N calibration samples (default: all)"
        ),
        tasks: str | None = typer.Option(
            None, "--tasks", help="also zero-shot BIG-bench tasks, comma-separated"
        ),
        tasks_limit: int = typer.Option(100, "--tasks-limit", help="questions per task"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
    ) -> None:
        """Prune a model; writes OUT/ with the model, masks.safetensors and metrics.json."""
        from .pipeline import prune_model

        try:
            metrics = prune_model(
                model,
                method,
                pattern,
                out,
                calib=calib,
                seqlen=seqlen,
                eval_windows=eval_windows,
                blocksize=blocksize,
                percdamp=percdamp,
                seed=seed,
                progress=not quiet,
                outliers=outliers,
                vc=vc,
                smooth=smooth,
                outlier_selection=outlier_selection,
                ebft_epochs=ebft_epochs,
                ebft_samples=ebft_samples,
                zeroshot_tasks=tasks.split(",") if tasks is not None else None,
                zeroshot_limit=tasks_limit,
            )
        except PruningError as err:
            _fail(err)
            return
        summary = {k: metrics[k] for k in ("model", "method", "pattern", "ppl", "sparsity_total")}
        summary["time_s"] = {k: metrics["time_s"][k] for k in ("prune", "eval")}
        if "zeroshot" in metrics:
            summary["mean_acc_norm"] = metrics["zeroshot"]["mean_acc_norm"]
        typer.echo(json.dumps(summary))

    @app.command("eval")
    def eval_(
        model: str = typer.Argument(..., help="smollm2, gemma3-270m or a HF model folder"),
        seqlen: int = typer.Option(2048, help="tokens per perplexity window"),
        eval_windows: int | None = typer.Option(None, help="cap on windows per corpus"),
        tasks: str | None = typer.Option(
            None, "--tasks", help="also zero-shot BIG-bench tasks, comma-separated"
        ),
        limit: int | None = typer.Option(None, "--limit", help="questions per zero-shot task"),
        ppl: bool = typer.Option(True, "--ppl/--no-ppl", help="measure perplexity"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
    ) -> None:
        """Perplexity on the wiki and shakespeare evaluation splits; with --tasks, also
        zero-shot multiple-choice accuracy (see `pruning/tasks.py` for the data)."""
        from .pipeline import eval_model

        try:
            result = {}
            if ppl:
                result = eval_model(
                    model, seqlen=seqlen, max_windows=eval_windows, progress=not quiet
                )
            if tasks:
                from .zeroshot import run_zeroshot

                result["zeroshot"] = run_zeroshot(
                    model, tasks.split(","), limit, progress=not quiet
                )
        except PruningError as err:
            _fail(err)
            return
        typer.echo(json.dumps(result))
