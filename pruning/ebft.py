"""Blockwise fine-tuning of one pruned decoder block with its mask frozen (EBFT, as used by
Maximov et al., 2026, arXiv 2507.03052).

Symbols (one decoder block f with parameters θ; kept masks M per pruned weight):
    X       the block's calibration inputs [ns, seqlen, hidden], propagated through the
            already-sparse (and already-tuned) earlier blocks
    Y       the dense block's outputs on the same X (the targets)
    L(θ)    mean squared error  ‖f_θ(X) − Y‖² / numel

Minimise L with AdamW (lr 2e-4, weight decay 0.1, betas (0.9, 0.95)) and gradient-norm
clipping at 1.0, training only the weights named in the masks. After every step each
pruned position is set back to exactly +0.0, and its gradient is zeroed before the step
so that AdamW's moments stay zero there (weight decay of a +0.0 is +0.0). Outliers are
part of the kept mask and so are trained like any kept weight.

The caller (the sequential driver) owns the model walking; this module sees one block.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from .errors import PruningError


@dataclass
class EbftConfig:
    epochs: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    batch_size: int = 1
    samples: int | None = None  # first N calibration samples (None = all)
    seed: int = 0


def check_config(config: EbftConfig) -> None:
    """Raise PruningError for a configuration that cannot train."""

    def finite(x: object) -> bool:
        return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)

    def whole(x: object) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    if not whole(config.epochs) or config.epochs < 0:
        raise PruningError(f"ebft epochs must be an integer >= 0, got {config.epochs!r}")
    if not finite(config.lr) or config.lr <= 0:
        raise PruningError(f"ebft lr must be a finite number > 0, got {config.lr!r}")
    if not finite(config.weight_decay) or config.weight_decay < 0:
        raise PruningError(f"ebft weight_decay must be >= 0, got {config.weight_decay!r}")
    betas = tuple(config.betas) if isinstance(config.betas, tuple | list) else ()
    if len(betas) != 2 or not all(finite(b) and 0 <= b < 1 for b in betas):
        raise PruningError(f"ebft betas must be two numbers in [0, 1), got {config.betas!r}")
    if not finite(config.grad_clip) or config.grad_clip <= 0:
        raise PruningError(f"ebft grad_clip must be a finite number > 0, got {config.grad_clip!r}")
    if not whole(config.batch_size) or config.batch_size < 1:
        raise PruningError(f"ebft batch_size must be an integer >= 1, got {config.batch_size!r}")
    if config.samples is not None and (not whole(config.samples) or config.samples < 1):
        raise PruningError(f"ebft samples must be None or an integer >= 1, got {config.samples!r}")
    if not whole(config.seed):
        raise PruningError(f"ebft seed must be an integer, got {config.seed!r}")


def _check_inputs(
    block: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, masks: dict[str, torch.Tensor]
) -> dict[str, nn.Parameter]:
    if inputs.dim() != 3 or inputs.shape != targets.shape:
        raise PruningError(
            f"ebft: inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} must both "
            "be [samples, seqlen, hidden]"
        )
    if inputs.shape[0] < 1:
        raise PruningError("ebft: no calibration samples")
    if not torch.isfinite(inputs).all():
        raise PruningError("ebft: inputs contain NaN or Inf")
    if not torch.isfinite(targets).all():
        raise PruningError("ebft: targets contain NaN or Inf")
    params = dict(block.named_parameters())
    if not masks:
        raise PruningError("ebft: no masks, so no parameter to train")
    for name, mask in masks.items():
        if name not in params:
            raise PruningError(f"ebft: mask names {name!r}, which the block does not have")
        if tuple(mask.shape) != tuple(params[name].shape):
            raise PruningError(
                f"ebft: mask of {name} is {tuple(mask.shape)}, the parameter is "
                f"{tuple(params[name].shape)}"
            )
        if mask.dtype != torch.bool:
            raise PruningError(f"ebft: mask of {name} must be bool, got {mask.dtype}")
        if not params[name].is_floating_point():
            raise PruningError(f"ebft: parameter {name} is not floating point")
    return {name: params[name] for name in masks}


def _forward(block: nn.Module, x: torch.Tensor, block_kwargs: dict) -> torch.Tensor:
    out = block(x, **block_kwargs)
    return out[0] if isinstance(out, tuple) else out


def _batch_kwargs(block_kwargs: dict, size: int) -> dict:
    """Repeat batch-of-one tensors in the kwargs (attention mask, rotary tables) for a
    batch of ``size``; tensors of another leading size, and everything else, stay."""
    if size == 1:
        return block_kwargs

    def expand(v: object) -> object:
        if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == 1:
            return v.expand(size, *v.shape[1:])
        if isinstance(v, tuple):
            return tuple(expand(t) for t in v)
        return v

    return {k: expand(v) for k, v in block_kwargs.items()}


def finetune_block(
    block: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    block_kwargs: dict,
    masks: dict[str, torch.Tensor],
    config: EbftConfig,
    progress: bool = False,
) -> dict[str, float]:
    """Fine-tune the parameters of ``block`` named in ``masks`` so that
    ``block(inputs) ≈ targets`` (MSE), keeping every pruned position at +0.0.

    Returns {"mse_before", "mse_after", "steps", "seconds"}; both MSEs are over the same
    samples (the first ``config.samples``, or all).
    """
    check_config(config)
    trained = _check_inputs(block, inputs, targets, masks)
    t0 = time.perf_counter()
    ns = inputs.shape[0] if config.samples is None else min(config.samples, inputs.shape[0])
    X, Y = inputs[:ns].detach(), targets[:ns].detach()
    bs = min(config.batch_size, ns)
    kwargs = _batch_kwargs(block_kwargs, bs)
    tail_kwargs = _batch_kwargs(block_kwargs, ns % bs) if ns % bs else kwargs

    def run_kwargs(size: int) -> dict:
        return kwargs if size == bs else tail_kwargs

    def mse() -> float:
        """Mean squared error over the ns samples, one batch at a time, no gradients."""
        total = 0.0
        with torch.no_grad():
            for i in range(0, ns, bs):
                out = _forward(block, X[i : i + bs], run_kwargs(min(bs, ns - i))).float()
                total += float(((out - Y[i : i + bs].float()) ** 2).sum())
        return total / Y.numel()

    keep = {name: masks[name].to(device=p.device, dtype=torch.bool) for name, p in trained.items()}
    all_params = list(block.named_parameters())
    requires = {name: p.requires_grad for name, p in all_params}
    was_training = block.training

    def zero_pruned() -> None:
        with torch.no_grad():
            for name, p in trained.items():
                p.copy_(torch.where(keep[name], p, torch.zeros_like(p)))

    steps = 0
    try:
        for name, p in all_params:
            p.requires_grad_(name in trained)
        block.eval()  # no dropout: the block is evaluated as deployed
        zero_pruned()
        mse_before = mse()
        params = list(trained.values())
        optimizer = torch.optim.AdamW(
            params,
            lr=config.lr,
            betas=tuple(config.betas),
            weight_decay=config.weight_decay,
        )
        generator = torch.Generator().manual_seed(config.seed)
        total_steps = config.epochs * math.ceil(ns / bs)
        bar = None
        if progress and total_steps:
            from tqdm.auto import tqdm

            bar = tqdm(total=total_steps, desc="ebft", leave=False)
        with torch.enable_grad():
            for _epoch in range(config.epochs):
                order = torch.randperm(ns, generator=generator)
                for i in range(0, ns, bs):
                    idx = order[i : i + bs]
                    out = _forward(block, X[idx], run_kwargs(len(idx)))
                    loss = torch.nn.functional.mse_loss(out.float(), Y[idx].float())
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    for name, p in trained.items():
                        if p.grad is not None:
                            p.grad.copy_(torch.where(keep[name], p.grad, torch.zeros_like(p)))
                    torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                    optimizer.step()
                    zero_pruned()
                    steps += 1
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{float(loss):.3g}")
        if bar is not None:
            bar.close()
        mse_after = mse()
    finally:
        for name, p in all_params:
            p.requires_grad_(requires[name])
            p.grad = None
        block.train(was_training)
    return {
        "mse_before": mse_before,
        "mse_after": mse_after,
        "steps": steps,
        "seconds": time.perf_counter() - t0,
    }
