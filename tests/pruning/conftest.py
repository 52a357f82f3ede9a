"""A tiny random Llama with a word-level tokenizer and small synthetic corpora, so the
driver and CLI tests run in seconds without the real model."""

from __future__ import annotations

from pathlib import Path

import pytest

from nmlab.pruning import data
from nmlab.run_demo import synthetic_docs as _docs
from nmlab.run_demo import tiny_model as make_tiny_model

__all__ = ["_docs", "make_tiny_model"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture()
def tiny_corpora(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Synthetic corpora in place of the packaged ones; a fresh cache folder."""
    monkeypatch.setenv("NMLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(data.CORPORA, "wiki", lambda: _docs(1))
    monkeypatch.setitem(data.CORPORA, "shakespeare", lambda: _docs(2))
