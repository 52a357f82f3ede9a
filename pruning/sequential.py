"""Block-by-block pruning of a decoder-only transformer, resumable.

Block i is pruned with calibration inputs that went through the already-pruned blocks
0..i-1, and only one block's inputs and outputs ([samples, seqlen, hidden]) are held, so
memory grows with one block, not with the model. Every linear layer inside a block is
pruned by the same per-layer function (see :mod:`methods`), from statistics of its inputs
gathered by forward hooks while the dense block runs.

Optional per-block steps, in this order: SmoothQuant-style rebalancing (``smooth``: a
pass that measures max|X_j| of every linear's inputs, then scales folded into the norm
that feeds q/k/v or gate/up, or applied to W only while it is pruned for o_proj and
down_proj), the statistics pass on the rebalanced block, pruning (with outliers and
Variance Correction inside the method), then ``finetune`` (EBFT) against the dense
block's outputs, and only then the propagation to the next block.

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
from .rebalance import fold_into_norm, rebalance, smooth_scales, unbalance, weight_absmax
from .storage import load_masks, save_masks

CHECKPOINT_VERSION = 1


@dataclass
class PruneResult:
    masks: dict[str, torch.Tensor]  # full weight name -> kept mask
    sparsity: dict[str, float]  # full module name -> achieved sparsity
    seconds: float  # pruning time, summed over resumed parts
    resumed_from: int = 0  # blocks that were taken from a checkpoint
    block_seconds: list[float] = field(default_factory=list)
    finetune: list[dict[str, Any]] = field(default_factory=list)  # per block, if given


# (block, inputs x, dense outputs on x, block kwargs, kept masks by local parameter name
# such as "self_attn.q_proj.weight") -> a dict of numbers; it may change kept weights only.
FinetuneFn = Callable[
    [nn.Module, torch.Tensor, torch.Tensor, dict, dict[str, torch.Tensor]], dict[str, Any]
]


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


def _add_stats(
    stats: LayerStats,
    X: torch.Tensor,
    needs: str,
    moments: bool = False,
    inv_scale: torch.Tensor | None = None,
) -> None:
    X = X.reshape(-1, X.shape[-1]).to(torch.float32)
    if inv_scale is not None:  # the rebalanced input X̂ = X·diag(1/s) of a W·diag(s)
        X = X * inv_scale
    if moments:
        X64 = X.double()
        sx, sxx = X64.sum(0), X64.T @ X64
        stats.sum_x = sx if stats.sum_x is None else stats.sum_x + sx
        stats.sum_xxT = sxx if stats.sum_xxT is None else stats.sum_xxT + sxx
    if needs in ("norms", "hessian"):
        sq = (X * X).sum(0)
        stats.sq_norm = sq if stats.sq_norm is None else stats.sq_norm + sq
    if needs == "hessian":
        from .sparsegpt import accumulate_hessian

        if stats.H is None:
            stats.H = torch.zeros(X.shape[1], X.shape[1], dtype=torch.float32)
        stats.H, _ = accumulate_hessian(stats.H, X, stats.n)
    stats.n += X.shape[0]


def _norm_modules(layer: nn.Module) -> dict[str, nn.Module]:
    """Submodules with a 1-D weight that are not linears: RMSNorm / LayerNorm candidates."""
    found = {}
    for name, mod in layer.named_modules():
        weight = getattr(mod, "weight", None)
        if name and not isinstance(mod, nn.Linear) and isinstance(weight, nn.Parameter):
            if weight.dim() == 1:
                found[name] = mod
    return found


def _norm_offset(norm: nn.Module, probe: torch.Tensor) -> float | None:
    """0 when the norm multiplies by its weight g, 1 when by (1 + g) (Gemma), else None;
    found numerically by running it with g = 0 and g = 1 (and any bias at 0)."""
    weight, bias = norm.weight, getattr(norm, "bias", None)
    saved = weight.detach().clone()
    saved_bias = bias.detach().clone() if isinstance(bias, torch.Tensor) else None
    try:
        if saved_bias is not None:
            bias.zero_()  # type: ignore[union-attr]
        weight.zero_()
        at0 = norm(probe).float()
        weight.fill_(1.0)
        at1 = norm(probe).float()
    finally:
        weight.copy_(saved)
        if saved_bias is not None:
            bias.copy_(saved_bias)  # type: ignore[union-attr]
    if not at1.abs().amax() > 0:
        return None
    if at0.abs().amax() == 0:
        return 0.0
    if torch.allclose(at1, 2 * at0, rtol=1e-4, atol=1e-6):
        return 1.0
    return None


def _fold(norm: nn.Module, s: torch.Tensor, probe: torch.Tensor, out: torch.Tensor) -> bool:
    """Fold diag(1/s) into ``norm`` if its parametrisation is known and the fold checks
    out numerically on ``probe`` (its recorded input, ``out`` its recorded output)."""
    offset = _norm_offset(norm, probe)
    if offset is None:
        return False
    weight, bias = norm.weight, getattr(norm, "bias", None)
    saved = weight.detach().clone()
    saved_bias = bias.detach().clone() if isinstance(bias, torch.Tensor) else None
    weight.copy_(fold_into_norm(saved, s, offset))
    if saved_bias is not None:
        bias.copy_(saved_bias / s.to(saved_bias.dtype))  # type: ignore[union-attr]
    expected = out.float() / s
    scale = float(expected.abs().amax()) + 1e-12
    if torch.allclose(norm(probe).float(), expected, rtol=1e-3, atol=1e-5 * scale):
        return True
    weight.copy_(saved)
    if saved_bias is not None:
        bias.copy_(saved_bias)  # type: ignore[union-attr]
    return False


@torch.no_grad()
def smooth_block(
    layer: nn.Module,
    linears: dict[str, nn.Linear],
    x: torch.Tensor,
    kwargs: dict,
    alpha: float,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rebalance one block in place, keeping its function (SmoothQuant, :mod:`rebalance`).

    One pass over the inputs ``x`` measures max|X_j| of every linear's input. Linears
    whose input is exactly the output of a norm in the block (found numerically, so
    Llama's post_attention_layernorm -> gate/up and Gemma-3's pre_feedforward_layernorm
    -> gate/up both work) share one s over all of them: the norm absorbs 1/s (Gemma's
    (1 + g) form included) and their columns are scaled by s. The others (o_proj,
    down_proj) are left as they are; their s is returned, to prune W·diag(s) with the
    inputs X·diag(1/s) and fold back with ``unbalance``.

    Returns ({full linear name: s} for unfolded linears, local names of changed norms).
    """
    absmax: dict[str, torch.Tensor] = {}
    first_in: dict[str, torch.Tensor] = {}
    norm_io: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    norms = _norm_modules(layer)

    def lin_hook(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, inp: tuple, _out: Any) -> None:
            X = inp[0].detach()
            m = X.reshape(-1, X.shape[-1]).abs().amax(0).float()
            absmax[name] = m if name not in absmax else torch.maximum(absmax[name], m)
            if name not in first_in:  # one sample is enough to tell which norm feeds it
                first_in[name] = X.clone()

        return hook

    def norm_hook(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, inp: tuple, out: Any) -> None:
            if name not in norm_io and isinstance(out, torch.Tensor) and inp:
                norm_io[name] = (inp[0].detach().clone(), out.detach().clone())

        return hook

    hooks = [mod.register_forward_hook(lin_hook(n)) for n, mod in linears.items()]
    hooks += [mod.register_forward_hook(norm_hook(n)) for n, mod in norms.items()]
    try:
        for j in range(x.shape[0]):
            _block_out(layer, x[j : j + 1], kwargs)
    finally:
        for hook in hooks:
            hook.remove()

    groups: dict[str, list[str]] = {}
    unfolded: list[str] = []
    for name in linears:
        if name not in first_in:
            raise PruningError(f"{name} was not called while the block ran")
        feeding = [
            nn_name
            for nn_name, (_, out) in norm_io.items()
            if out.shape == first_in[name].shape and torch.equal(out, first_in[name])
        ]
        if len(feeding) == 1:
            groups.setdefault(feeding[0], []).append(name)
        else:
            unfolded.append(name)

    changed = []
    for norm_name, members in groups.items():
        x_max = torch.stack([absmax[n] for n in members]).amax(0)
        s = smooth_scales(x_max, weight_absmax([linears[n].weight for n in members]), alpha)
        probe, out = norm_io[norm_name]
        if _fold(norms[norm_name], s, probe, out):
            for n in members:
                W = linears[n].weight
                W.copy_(rebalance([W.data], s)[0])
            changed.append(norm_name)
        else:
            unfolded.extend(members)
    scales = {
        n: smooth_scales(absmax[n], weight_absmax([linears[n].weight]), alpha) for n in unfolded
    }
    return scales, changed


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
    smooth: float | None = None,
    finetune: FinetuneFn | None = None,
) -> PruneResult:
    """Prune every linear layer of every decoder block of ``model`` in place.

    ``samples``: [nsamples, seqlen] calibration token ids. ``smooth``: rebalancing
    strength α (see :func:`smooth_block`), None for none. ``finetune``: called after a
    block is pruned, before its outputs feed the next block (see ``FinetuneFn``); its
    results are returned per block in ``PruneResult.finetune``.
    """
    if smooth is not None and not 0.0 <= smooth <= 1.0:
        raise PruningError(f"smoothing alpha {smooth:g}: must be in [0, 1]")
    layers = decoder_layers(model)
    linears = block_linears(model)
    prefix = {id(layer): name for name, layer in model.named_modules() if layer in layers}
    state = checkpoint.open() if checkpoint else {"done": 0, "seconds": []}
    start = int(state["done"])

    masks: dict[str, torch.Tensor] = {}
    sparsity: dict[str, float] = {}
    for i in range(start):  # blocks finished by an earlier, interrupted run
        weights, block_masks = checkpoint.load_block(i)  # type: ignore[union-attr]
        for name, W in weights.items():  # linears by module name, others (norms) by param
            target = linears[name].weight if name in linears else model.get_parameter(name)
            target.copy_(W)
        for name, mask in block_masks.items():
            masks[name + ".weight"] = mask
            sparsity[name] = sparsity_of(mask)

    x, block_kwargs = capture_block_inputs(model, samples)
    if start:
        x = checkpoint.load_inputs(start)  # type: ignore[union-attr]
    y = torch.empty_like(x)
    seconds = list(state.get("seconds", []))
    tuned: list[dict[str, Any]] = list(state.get("finetune", []))

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
        local = {id(m): ln for ln, m in layer.named_modules()}
        names = [n for n, m in linears.items() if id(m) in local]
        scales: dict[str, torch.Tensor] = {}
        changed: list[str] = []
        if smooth is not None:
            scales, changed = smooth_block(layer, {n: linears[n] for n in names}, x, kw, smooth)
        stats = {n: LayerStats() for n in names}
        y_dense = torch.empty_like(x) if finetune is not None else None
        if method.needs != "none" or method.moments or finetune is not None:
            hooks = []
            if method.needs != "none" or method.moments:
                for n in names:
                    inv = 1.0 / scales[n] if n in scales else None
                    hook = linears[n].register_forward_hook(
                        lambda _m, inp, _out, s=stats[n], inv=inv: _add_stats(
                            s, inp[0], method.needs, method.moments, inv
                        )
                    )
                    hooks.append(hook)
            try:
                for j in range(x.shape[0]):
                    out = _block_out(layer, x[j : j + 1], kw)
                    if y_dense is not None:
                        y_dense[j : j + 1] = out
            finally:
                for hook in hooks:
                    hook.remove()

        block_masks = {}
        for n in names:
            s = stats[n]
            if any(not torch.isfinite(t).all() for t in s.tensors()):
                raise PruningError(f"calibration activations entering {n} contain NaN or Inf")
            W = linears[n].weight
            if n in scales:  # prune Ŵ = W·diag(s) (stats are of X·diag(1/s)), then fold back
                W_new, mask = method.prune(n, rebalance([W.data], scales[n])[0], s)
                W_new = unbalance(W_new, scales[n])
            else:
                W_new, mask = method.prune(n, W.data, s)
            W.copy_(W_new.to(W.dtype))
            block_masks[n] = mask
            masks[n + ".weight"] = mask
            sparsity[n] = sparsity_of(mask)

        if finetune is not None:
            assert y_dense is not None
            local_masks = {f"{local[id(linears[n])]}.weight": block_masks[n] for n in names}
            tuned.append(dict(finetune(layer, x, y_dense, kw, local_masks)))
            del y_dense

        block_weights = {n: linears[n].weight.detach().clone() for n in names}
        for norm_name in changed:  # folded norms: saved by full parameter name
            norm = layer.get_submodule(norm_name)
            for pname, param in norm.named_parameters(recurse=False):
                block_weights[f"{prefix[id(layer)]}.{norm_name}.{pname}"] = param.detach().clone()

        for j in range(x.shape[0]):  # inputs of the next block, through the pruned one
            y[j : j + 1] = _block_out(layer, x[j : j + 1], kw)
        x, y = y, x
        seconds.append(time.perf_counter() - t0)
        if checkpoint:
            state = {"done": i + 1, "seconds": seconds}
            if finetune is not None:
                state["finetune"] = tuned
            checkpoint.save_block(i, block_weights, block_masks, x, state)

    return PruneResult(masks, sparsity, sum(seconds), start, seconds, tuned)
