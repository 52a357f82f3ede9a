"""A tiny random Llama with a word-level tokenizer and small synthetic corpora, so the
driver and CLI tests run in seconds without the real model."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from nmlab.pruning import data

WORDS = [f"w{i}" for i in range(120)]


def _docs(seed: int, count: int = 24, length: int = 300) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    docs = []
    for d in range(count):
        # a Zipf-like word choice with some repeated phrases: text a model can fit
        words = [WORDS[min(int(rng.paretovariate(1.2)) - 1, len(WORDS) - 1)] for _ in range(length)]
        docs.append((f"doc{d}", " ".join(words)))
    return docs


def make_tiny_model(folder: Path, layers: int = 2, seed: int = 0) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from nmlab.pruning.models import save_model_dir

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(WORDS) + 1,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).eval()
    save_model_dir(model, folder)
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture()
def tiny_corpora(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Synthetic corpora in place of the packaged ones; a fresh cache folder."""
    monkeypatch.setenv("NMLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(data.CORPORA, "wiki", lambda: _docs(1))
    monkeypatch.setitem(data.CORPORA, "shakespeare", lambda: _docs(2))
