"""Block-by-block pruning of a decoder-only transformer, resumable.

Block i is pruned with calibration inputs that went through the already-pruned blocks
0..i-1, and only one block's inputs and outputs ([samples, seqlen, hidden]) are held, so
memory grows with one block, not with the model. Every linear layer inside a block is
pruned by the same per-layer function (see :mod:`methods`), from statistics of its inputs
gathered by forward hooks while the dense block runs.

With a checkpoint folder, each finished block writes its pruned weights, its masks and
the next block's inputs there (atomically, then a small ``state.json``); a killed run
started again with the same settings continues after the last finished block and ends
with the same tensors as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from .errors import PruningError
from .masks import Pattern, check_weight, sparsity_of
from .methods import LayerStats, Method
from .storage import load_masks, save_masks

CHECKPOINT_VERSION = 1


@dataclass
class PruneResult:
    masks: dict[str, torch.Tensor]  # full weight name -> kept mask
    sparsity: dict[str, float]  # full module name -> achieved sparsity
    seconds: float  # pruning time, summed over resumed parts
    resumed_from: int = 0  # blocks that were taken from a checkpoint
    block_seconds: list[float] = field(default_factory=list)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a causal LM (Llama, Mistral, Qwen, Gemma, ...)."""
    count = getattr(model.config.get_text_config(), "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise PruningError(f"cannot find the {count} decoder layers of {type(model).__name__}")


def block_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Every nn.Linear inside the decoder blocks, by full module name, in model order."""
    layers = decoder_layers(model)
    prefix = {id(layer): name for name, layer in model.named_modules() if layer in layers}
    found: dict[str, nn.Linear] = {}
    for layer in layers:
        for name, mod in layer.named_modules():
            if isinstance(mod, nn.Linear):
                found[f"{prefix[id(layer)]}.{name}"] = mod
    return found


def check_model(model: nn.Module, pattern: Pattern) -> None:
    """Fail early, before any work, on a weight the pattern cannot prune."""
    for name, mod in block_linears(model).items():
        check_weight(mod.weight, pattern, f"{name}.weight")


@torch.no_grad()
def capture_block_inputs(
    model: nn.Module, samples: torch.Tensor
) -> tuple[torch.Tensor, list[dict]]:
    """Inputs of block 0 for every sample ([ns, seqlen, hidden]) and each block's keyword
    arguments (attention mask, rotary embeddings...) for a batch of one.

    Every block is replaced by the identity while the model runs, so this costs the
    embedding only; the kwargs may differ per block (Gemma's sliding/full attention).
    """
    layers = decoder_layers(model)
    base = model.get_decoder() if hasattr(model, "get_decoder") else model
    first: list[torch.Tensor] = []
    kwargs: list[dict] = [{} for _ in layers]

    def recorder(i: int) -> Callable[..., Any]:
        def forward(hidden_states: torch.Tensor, *args: Any, **kw: Any) -> torch.Tensor:
            if args:
                raise PruningError("decoder block called with positional extras; unsupported")
            if i == 0:
                first.append(hidden_states.detach().clone())
            kwargs[i] = {k: v for k, v in kw.items() if k not in ("cache", "past_key_values")}
            return hidden_states

        return forward

    for i, layer in enumerate(layers):
        layer.forward = recorder(i)
    try:
        for ids in samples:
            base(input_ids=ids.unsqueeze(0), use_cache=False)
    finally:
        for layer in layers:
            del layer.forward
    for kw in kwargs:
        kw["use_cache"] = False
    return torch.cat(first), kwargs


def _block_out(layer: nn.Module, x: torch.Tensor, kwargs: dict) -> torch.Tensor:
    out = layer(x, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def _add_stats(stats: LayerStats, X: torch.Tensor, needs: str) -> None:
    X = X.reshape(-1, X.shape[-1]).to(torch.float32)
    if needs in ("norms", "hessian"):
        sq = (X * X).sum(0)
        stats.sq_norm = sq if stats.sq_norm is None else stats.sq_norm + sq
    if needs == "hessian":
        from .sparsegpt import accumulate_hessian

        if stats.H is None:
            stats.H = torch.zeros(X.shape[1], X.shape[1], dtype=torch.float32)
        stats.H, _ = accumulate_hessian(stats.H, X, stats.n)
    stats.n += X.shape[0]


class Checkpoint:
    """Files of a resumable run: ``settings.json``, ``state.json``, ``block_XXXX.*``,
    ``inputs_XXXX.safetensors`` (inputs of the next block to prune)."""

    def __init__(self, folder: str | os.PathLike[str], settings: dict) -> None:
        self.folder = Path(folder)
        self.settings = {"version": CHECKPOINT_VERSION, **settings}

    def open(self) -> dict:
        """Create the folder, or check that an existing one was made with these settings."""
        path = self.folder / "settings.json"
        if path.is_file():
            old = json.loads(path.read_text())
            if old != json.loads(json.dumps(self.settings)):
                raise PruningError(
                    f"{self.folder} holds an unfinished run with other settings; "
                    "delete it or repeat that run's settings"
                )
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._write_json("settings.json", self.settings)
        state = self.folder / "state.json"
        return json.loads(state.read_text()) if state.is_file() else {"done": 0, "seconds": []}

    def _write_json(self, name: str, data: dict) -> None:
        tmp = self.folder / f"{name}.tmp"
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.folder / name)

    def _save(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        tmp = self.folder / f"{name}.tmp"
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        os.replace(tmp, self.folder / name)

    def save_block(
        self,
        i: int,
        weights: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor],
        next_inputs: torch.Tensor,
        state: dict,
    ) -> None:
        self._save(f"block_{i:04d}.safetensors", weights)
        save_masks(self.folder / f"block_{i:04d}.masks.safetensors", masks)
        self._save(f"inputs_{i + 1:04d}.safetensors", {"x": next_inputs})
        self._write_json("state.json", state)  # the commit point
        old = self.folder / f"inputs_{i:04d}.safetensors"
        if old.exists():
            old.unlink()

    def load_block(self, i: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        return (
            load_file(str(self.folder / f"block_{i:04d}.safetensors")),
            load_masks(self.folder / f"block_{i:04d}.masks.safetensors"),
        )

    def load_inputs(self, i: int) -> torch.Tensor:
        return load_file(str(self.folder / f"inputs_{i:04d}.safetensors"))["x"]

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@torch.no_grad()
def prune_sequential(
    model: nn.Module,
    samples: torch.Tensor,
    method: Method,
    checkpoint: Checkpoint | None = None,
    progress: bool = True,
) -> PruneResult:
    """Prune every linear layer of every decoder block of ``model`` in place.

    ``samples``: [nsamples, seqlen] calibration token ids.
    """
    layers = decoder_layers(model)
    linears = block_linears(model)
    state = checkpoint.open() if checkpoint else {"done": 0, "seconds": []}
    start = int(state["done"])

    masks: dict[str, torch.Tensor] = {}
    sparsity: dict[str, float] = {}
    for i in range(start):  # blocks finished by an earlier, interrupted run
        weights, block_masks = checkpoint.load_block(i)  # type: ignore[union-attr]
        for name, W in weights.items():
            linears[name].weight.copy_(W)
        for name, mask in block_masks.items():
            masks[name + ".weight"] = mask
            sparsity[name] = sparsity_of(mask)

    x, block_kwargs = capture_block_inputs(model, samples)
    if start:
        x = checkpoint.load_inputs(start)  # type: ignore[union-attr]
    y = torch.empty_like(x)
    seconds = list(state.get("seconds", []))

    bar = tqdm(
        range(start, len(layers)),
        desc=f"{method.name} blocks",
        disable=not progress,
        initial=start,
        total=len(layers),
    )
    for i in bar:
        t0 = time.perf_counter()
        layer, kw = layers[i], block_kwargs[i]
        if not torch.isfinite(x).all():
            raise PruningError(f"calibration activations entering block {i} contain NaN or Inf")
        names = [n for n, m in linears.items() if any(m is mm for mm in layer.modules())]
        stats = {n: LayerStats() for n in names}
        hooks = []
        if method.needs != "none":
            for n in names:
                hook = linears[n].register_forward_hook(
                    lambda _m, inp, _out, s=stats[n]: _add_stats(s, inp[0], method.needs)
                )
                hooks.append(hook)
            try:
                for j in range(x.shape[0]):
                    _block_out(layer, x[j : j + 1], kw)
            finally:
                for hook in hooks:
                    hook.remove()

        block_weights, block_masks = {}, {}
        for n in names:
            s = stats[n]
            if any(not torch.isfinite(t).all() for t in s.tensors()):
                raise PruningError(f"calibration activations entering {n} contain NaN or Inf")
            W = linears[n].weight
            W_new, mask = method.prune(n, W.data, s)
            W.copy_(W_new.to(W.dtype))
            block_weights[n], block_masks[n] = W.detach().clone(), mask
            masks[n + ".weight"] = mask
            sparsity[n] = sparsity_of(mask)

        for j in range(x.shape[0]):  # inputs of the next block, through the pruned one
            y[j : j + 1] = _block_out(layer, x[j : j + 1], kw)
        x, y = y, x
        seconds.append(time.perf_counter() - t0)
        if checkpoint:
            state = {"done": i + 1, "seconds": seconds}
            checkpoint.save_block(i, block_weights, block_masks, x, state)

    return PruneResult(masks, sparsity, sum(seconds), start, seconds)
