"""A miniature `nmlab run` on a tiny random Llama and synthetic corpora, built in a folder.

For notebooks and CI when no real results.json is at hand: seconds, not minutes; the
numbers mean nothing about real models.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

WORDS = [f"w{i}" for i in range(120)]


def synthetic_docs(seed: int, count: int = 24, length: int = 300) -> list[tuple[str, str]]:
    """Zipf-like word soup: text a tiny model can partly fit."""
    rng = random.Random(seed)
    return [
        (f"doc{d}", " ".join(WORDS[min(int(rng.paretovariate(1.2)) - 1, len(WORDS) - 1)]
                             for _ in range(length)))
        for d in range(count)
    ]  # fmt: skip


def tiny_model(folder: Path, layers: int = 2, seed: int = 0) -> Path:
    """A random LlamaForCausalLM (hidden 64, MLP 128) with a word-level tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from nmlab.pruning.models import save_model_dir

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(WORDS) + 1, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=True)  # fmt: skip
    save_model_dir(LlamaForCausalLM(config).eval(), folder)
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(folder)
    return folder


def tiny_run(folder: str | os.PathLike[str], quiet: bool = True) -> dict[str, Any]:
    """Run the main job (wanda + sparsegpt, 2:4 + 8:16, base/outliers/outliers+vc) on the
    tiny model; returns results.json's content (written to FOLDER/out/)."""
    from nmlab.pruning import data

    from .run_job import run_job
    from .run_plan import RunSettings, check_settings, load_archs

    folder = Path(folder)
    model = tiny_model(folder / "model")
    settings = RunSettings(model=str(model), patterns=("2:4", "8:16"),
                           methods=("wanda", "sparsegpt"),
                           variants=("base", "outliers", "outliers+vc"), archs=(), calib=2,
                           seqlen=64, eval_windows=2, tokens=256, size=256)  # fmt: skip
    check_settings(settings)
    saved_env = os.environ.get("NMLAB_CACHE")
    saved = {c: data.CORPORA[c] for c in ("wiki", "shakespeare")}
    os.environ["NMLAB_CACHE"] = str(folder / "cache")
    data.CORPORA["wiki"] = lambda: synthetic_docs(1)
    data.CORPORA["shakespeare"] = lambda: synthetic_docs(2)
    try:
        return run_job(settings, load_archs(()), model, folder / "out", quiet=quiet)
    finally:
        data.CORPORA.update(saved)
        if saved_env is None:
            os.environ.pop("NMLAB_CACHE", None)
        else:
            os.environ["NMLAB_CACHE"] = saved_env
