"""`nmlab simulate gemm|model` through typer's CliRunner."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from nmlab.formats import save
from nmlab.simulator.cli import register
from nmlab.simulator.workload import synthetic_encoded

app = typer.Typer()
register(app)
runner = CliRunner()


def test_gemm_json():
    res = runner.invoke(app, ["simulate", "gemm", "--m", "100", "--n", "70", "--k", "50", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["cycles"] >= doc["array_cycles"] == 6 * (2 * 32 + 32 + 100 - 2)
    assert set(doc["stall_cycles"]) == {
        "dram_bandwidth",
        "sram_bandwidth",
        "decoder",
        "outlier_path",
    }
    assert doc["traffic_bytes"]["dram"]["weights.values"] == 70 * 50


def test_gemm_sparse_table():
    res = runner.invoke(
        app,
        [
            "simulate",
            "gemm",
            "--m",
            "16",
            "--n",
            "64",
            "--k",
            "64",
            "--pattern",
            "8:16",
            "--arch",
            "rank-8of16",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "stall: decoder" in res.stdout and "weights.meta" in res.stdout


def _one_line_error(args: list[str], needle: str) -> None:
    res = runner.invoke(app, args)
    assert res.exit_code != 0
    assert needle in res.stderr
    assert "Traceback" not in res.output and len(res.stderr.strip().splitlines()) == 1


def test_gemm_errors():
    base = ["simulate", "gemm", "--m", "4", "--n", "32"]
    _one_line_error(base + ["--k", "32", "--arch", "nope"], "no such preset")
    _one_line_error(
        base + ["--k", "40", "--pattern", "8:16", "--arch", "rank-8of16"], "not divisible by M=16"
    )
    _one_line_error(
        base + ["--k", "32", "--pattern", "8:16", "--arch", "stc-2of4"],
        "cannot execute pattern 8:16",
    )
    _one_line_error(base + ["--k", "0"], "--k must be >= 1")


def test_model_over_container(tmp_path):
    tensors = {
        "model.layers.0.mlp.up_proj.weight": synthetic_encoded(96, 64, "8:16", "rank", "float16"),
        "model.layers.0.mlp.down_proj.weight": synthetic_encoded(64, 96, "8:16", "rank", "float16"),
    }
    path = tmp_path / "enc.safetensors"
    save(path, tensors)
    res = runner.invoke(
        app, ["simulate", "model", str(path), "--arch", "rank-8of16", "--tokens", "128", "--json"]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    for phase, tokens in (("prefill", 128), ("decode", 1)):
        layers, total = doc[phase]["layers"], doc[phase]["total"]
        assert sorted(x["workload"]["name"] for x in layers) == sorted(tensors)
        assert all(x["workload"]["tokens"] == tokens for x in layers)
        assert total["cycles"] == sum(x["cycles"] for x in layers)
        assert total["traffic_bytes"]["dram"]["weights.meta"] == sum(
            t.stream_bytes()["meta"] for t in tensors.values()
        )
    table = runner.invoke(app, ["simulate", "model", str(path), "--arch", "rank-8of16"])
    assert table.exit_code == 0 and "prefill total" in table.stdout


def test_model_errors(tmp_path):
    path = tmp_path / "enc.safetensors"
    save(path, {"w": synthetic_encoded(32, 32, "8:16", "rank", "float16")})
    _one_line_error(
        ["simulate", "model", str(path), "--arch", "stc-2of4"], "cannot execute pattern 8:16"
    )
    _one_line_error(
        ["simulate", "model", str(tmp_path / "missing.safetensors")], "no such container"
    )


def _pruned_tiny_model(folder, monkeypatch, tmp_path):
    """A tiny random Llama, magnitude-pruned 2:4 and saved like `nmlab prune` does."""
    import random

    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from nmlab.pruning import data
    from nmlab.pruning.models import save_model_dir
    from nmlab.pruning.storage import save_masks

    words = [f"w{i}" for i in range(60)]
    rng = random.Random(0)
    docs = [(f"d{i}", " ".join(rng.choice(words) for _ in range(200))) for i in range(12)]
    monkeypatch.setenv("NMLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(data.CORPORA, "wiki", lambda: docs)

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=61,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).eval()
    masks = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("proj.weight"):
                g = p.view(p.shape[0], -1, 4)
                keep = torch.zeros_like(g, dtype=torch.bool)
                keep.scatter_(-1, g.abs().topk(2, dim=-1).indices, True)
                p.mul_(keep.view_as(p))  # leaves -0.0 where a negative weight is pruned
                masks[name] = keep.view_as(p)
    save_model_dir(model, folder)
    save_masks(folder / "masks.safetensors", masks)
    (folder / "metrics.json").write_text(json.dumps({"pattern": "2:4"}))
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(folder)
    return folder, len(masks)


def test_model_over_pruned_folder_with_perplexity(tmp_path, monkeypatch):
    folder, n_linear = _pruned_tiny_model(tmp_path / "pruned", monkeypatch, tmp_path)
    res = runner.invoke(
        app,
        [
            "simulate",
            "model",
            str(folder),
            "--arch",
            "stc-2of4",
            "--tokens",
            "32",
            "--ppl-windows",
            "2",
            "--seqlen",
            "32",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert len(doc["prefill"]["layers"]) == n_linear == 7
    assert all(x["workload"]["pattern"] == "2:4" for x in doc["decode"]["layers"])
    ppl = doc["perplexity"]
    assert ppl["windows"] == 2
    assert ppl["decoded_ppl"] == ppl["pruned_ppl"]  # float32 streams decode bit for bit
