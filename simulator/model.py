"""Every linear layer of an encoded model, in both inference phases."""

from __future__ import annotations

from pathlib import Path

from .arch import Arch
from .errors import SimulatorError
from .report import Report, add
from .simulate import simulate
from .workload import Workload


def load_container(path: str | Path) -> dict:
    """The tensors of an `nmlab encode` container (a .safetensors file, or a folder holding one)."""
    from nmlab.formats import FormatError, load

    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if len(files) != 1:
            raise SimulatorError(
                f"{path}: expected one encoded .safetensors container, found {len(files)}"
            )
        path = files[0]
    if not path.is_file():
        raise SimulatorError(f"{path}: no such container")
    try:
        tensors = load(path)
    except FormatError as err:
        raise SimulatorError(f"{path}: {err}") from None
    if not tensors:
        raise SimulatorError(f"{path}: the container holds no tensors")
    return tensors


def is_pruned_dir(path: str | Path) -> bool:
    path = Path(path)
    return (
        path.is_dir()
        and (path / "model.safetensors").is_file()
        and (path / "masks.safetensors").is_file()
    )


def encode_pruned_dir(path: str | Path, arch: Arch, dtype: str, pattern: str | None = None) -> dict:
    """Encode the pruned linear weights of an `nmlab prune` folder with the arch's layout.

    The tensors named in masks.safetensors are the pruned linears; the pattern (and any
    K:256 outliers) come from metrics.json unless given. Weights are cast to `dtype`
    ("float32" is lossless).
    """
    import json

    import ml_dtypes
    import numpy as np
    from safetensors import safe_open

    from nmlab.formats import FormatError, encode

    path = Path(path)
    try:
        metrics = json.loads((path / "metrics.json").read_text())
    except (OSError, ValueError):
        metrics = {}
    # K:256 outliers kept outside the N:M pattern; unstructured outliers record the
    # smallest K:256 whose slots hold them as "outliers_encoded"
    outliers = metrics.get("outliers_encoded", metrics.get("outliers"))
    if pattern is None:
        if "pattern" not in metrics:
            raise SimulatorError(f"{path}: no pattern in metrics.json; pass --pattern")
        pattern = metrics["pattern"]
    if ":" not in str(pattern):
        raise SimulatorError(f"{path}: pattern {pattern!r} is not N:M; only N:M runs natively")
    layout = arch.decoder_layout(pattern)
    if layout is None or not arch.executes(pattern):
        raise SimulatorError(f"arch {arch.name} cannot execute pattern {pattern} natively")
    from nmlab.pruning.storage import load_masks

    masks = load_masks(path / "masks.safetensors")
    np_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype
    out = {}
    with safe_open(str(path / "model.safetensors"), "np") as f:
        available = set(f.keys())
        for name, mask in masks.items():
            if name not in available:
                raise SimulatorError(f"{path}: masked tensor {name} missing from model.safetensors")
            w = f.get_tensor(name)
            # zero (+0.0) everything outside the mask: the codec counts -0.0 as occupied
            w = np.where(mask.numpy(), w, np.zeros_like(w)).astype(np_dtype)
            try:
                out[name] = encode(w, pattern, layout=layout, outliers=outliers)
            except FormatError as err:
                raise SimulatorError(f"{path}: {name}: {err}") from None
    return out


def perplexity_through_decode(
    model_dir: str | Path, tensors: dict, seqlen: int, max_windows: int, corpus: str = "wiki"
) -> dict[str, float]:
    """Perplexity of the pruned model as saved, and with every linear weight replaced by
    `decode()` of its encoded stream. With a float32 container both must be equal."""
    import numpy as np
    import torch

    from nmlab.formats import decode
    from nmlab.pruning.data import corpus_tokens, eval_windows
    from nmlab.pruning.models import load_model
    from nmlab.pruning.perplexity import perplexity

    model, tokenizer = load_model(model_dir)
    windows = eval_windows(corpus_tokens(corpus, "eval", tokenizer), seqlen, max_windows)
    pruned = perplexity(model, windows, progress=False)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, enc in tensors.items():
            w = torch.from_numpy(np.asarray(decode(enc), dtype=np.float32))
            if params[name].shape != w.shape:
                raise SimulatorError(f"{name}: container shape {tuple(w.shape)} != model's")
            params[name].copy_(w)
    decoded = perplexity(model, windows, progress=False)
    return {
        "corpus": corpus,
        "windows": int(windows.shape[0]),
        "seqlen": seqlen,
        "pruned_ppl": pruned,
        "decoded_ppl": decoded,
    }


def simulate_model(
    arch: Arch, tensors: dict, tokens: int
) -> dict[str, dict[str, Report | list[Report]]]:
    """Per-layer and total reports for prefill (`tokens` tokens) and decode (one token)."""
    if tokens < 1:
        raise SimulatorError(f"tokens must be >= 1 (got {tokens})")
    out: dict[str, dict] = {}
    for phase, t in (("prefill", tokens), ("decode", 1)):
        layers = [
            simulate(arch, Workload.from_encoded(enc, t, name)) for name, enc in tensors.items()
        ]
        total = add(layers, arch.name, {"phase": phase, "tokens": t, "layers": len(layers)})
        out[phase] = {"layers": layers, "total": total}
    return out
