"""`nmlab prune` / `nmlab eval` on a tiny random Llama and synthetic corpora: outputs,
metrics, resume after a kill, and one clear line for each bad input with OUT/ untouched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import typer
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from nmlab.pruning import pipeline
from nmlab.pruning.cli import register
from nmlab.pruning.masks import is_nm
from nmlab.pruning.storage import load_masks

from .conftest import make_tiny_model

FAST = ["--calib", "4", "--seqlen", "32", "--eval-windows", "3", "-q"]


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:  # keep the sub-command names with two commands registered
        pass

    return app


def run(app: typer.Typer, *args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_prune_writes_model_masks_and_metrics(app, tiny_model_dir, tiny_corpora, tmp_path) -> None:
    out = tmp_path / "out"
    res = run(
        app,
        "prune",
        "--model",
        tiny_model_dir,
        "--method",
        "sparsegpt",
        "--pattern",
        "8:16",
        "-o",
        out,
        *FAST,
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(summary["ppl"]) == {"wiki", "shakespeare"}
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "generation_config.json",
        "masks.safetensors",
        "metrics.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pattern"] == "8:16" and metrics["method"] == "sparsegpt"
    assert all(v > 1 for v in metrics["ppl"].values())
    assert metrics["eval_windows"] == {"wiki": 3, "shakespeare": 3}
    assert len(metrics["sparsity"]) == 14
    assert all(s == pytest.approx(0.5) for s in metrics["sparsity"].values())
    assert metrics["time_s"]["prune"] > 0 and len(metrics["time_s"]["per_block"]) == 2
    masks = load_masks(out / "masks.safetensors")
    weights = load_file(str(out / "model.safetensors"))
    assert len(masks) == 14
    for name, mask in masks.items():
        assert is_nm(mask, 8, 16)
        assert (weights[name][~mask] == 0).all()
    assert not (tmp_path / ".out.partial").exists()

    res = run(app, "eval", out, "--seqlen", "32", "--eval-windows", "3", "-q")
    assert res.exit_code == 0, res.output
    ppl = json.loads(res.stdout.strip().splitlines()[-1])["ppl"]
    assert ppl == pytest.approx(metrics["ppl"], rel=1e-5)


class Killed(Exception):
    pass


def test_killed_prune_resumes_to_identical_output(
    app, tiny_model_dir, tiny_corpora, tmp_path, monkeypatch
) -> None:
    args = ["prune", "--model", tiny_model_dir, "--method", "wanda", "--pattern", "2:4", *FAST]
    assert run(app, *args, "-o", tmp_path / "ref").exit_code == 0

    real = pipeline.make_method

    def dying(*a, **k):
        method = real(*a, **k)
        inner = method.prune

        def prune(name, W, s):
            if ".layers.1." in name:
                raise Killed
            return inner(name, W, s)

        method.prune = prune
        return method

    monkeypatch.setattr(pipeline, "make_method", dying)
    out = tmp_path / "out"
    res = run(app, *args, "-o", out)
    assert isinstance(res.exception, Killed)
    assert not out.exists() and (tmp_path / ".out.partial" / "checkpoint").is_dir()

    monkeypatch.setattr(pipeline, "make_method", real)
    res = run(app, *args, "-o", out)
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_block"] == 1
    ref_metrics = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    assert metrics["ppl"] == ref_metrics["ppl"]
    a, b = (
        load_file(str(out / "model.safetensors")),
        load_file(str(tmp_path / "ref" / "model.safetensors")),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / ".out.partial").exists()


def _broken_model(tmp_path: Path, where: str) -> Path:
    folder = make_tiny_model(tmp_path / f"model-{where}")
    weights = load_file(str(folder / "model.safetensors"))
    key = {
        "weight": "model.layers.0.mlp.up_proj.weight",
        "activation": "model.layers.1.input_layernorm.weight",
    }[where]
    weights[key].view(-1)[0] = float("nan")
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unknown-model", "unknown model or path"),
        ("n-ge-m", "need 1 <= N < M"),
        ("width", "not divisible by M=48"),
        ("nan-weight", "weight contains NaN or Inf"),
        ("nan-activation", "contain NaN or Inf"),
        ("few-tokens", "too few calibration tokens"),
        ("bad-method", "unknown method"),
    ],
)
def test_bad_input_one_line_and_no_output(
    app, tiny_model_dir, tiny_corpora, tmp_path, case, message
) -> None:
    model, pattern, calib = str(tiny_model_dir), "2:4", "4"
    method = "wanda"
    if case == "unknown-model":
        model = str(tmp_path / "no-such-model")
    elif case == "n-ge-m":
        pattern = "4:4"
    elif case == "width":
        pattern = "2:48"
    elif case == "nan-weight":
        model = str(_broken_model(tmp_path, "weight"))
    elif case == "nan-activation":
        model = str(_broken_model(tmp_path, "activation"))
    elif case == "few-tokens":
        calib = "100000"
    elif case == "bad-method":
        method = "obs"
    out = tmp_path / "out"
    res = run(
        app,
        "prune",
        "--model",
        model,
        "--method",
        method,
        "--pattern",
        pattern,
        "-o",
        out,
        "--calib",
        calib,
        "--seqlen",
        "32",
        "-q",
    )
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.stderr
    assert "Traceback" not in res.output
    assert not out.exists()


def test_existing_output_is_left_untouched(app, tiny_model_dir, tiny_corpora, tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    res = run(app, "prune", "--model", tiny_model_dir, "-o", out, *FAST)
    assert res.exit_code == 2 and "already exists" in res.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_eval_unknown_model(app, tmp_path) -> None:
    res = run(app, "eval", tmp_path / "nothing")
    assert res.exit_code == 2 and res.stderr.startswith("error: unknown model or path")


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_prune_with_outliers_and_variance_correction_is_encodable(
    app, tiny_model_dir, tiny_corpora, tmp_path, method: str
) -> None:
    import numpy as np

    from nmlab.formats import decode, encode

    out = tmp_path / "out"
    res = run(app, "prune", "--model", tiny_model_dir, "--method", method, "--pattern", "2:4",
              "--outliers", "16:256", "--vc", "weight", "-o", out, *FAST)  # fmt: skip
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["outliers"] == "16:256" and metrics["vc"] == "weight"
    weights = load_file(str(out / "model.safetensors"))
    masks = load_masks(out / "masks.safetensors")
    assert masks
    for name, mask in masks.items():
        W = weights[name]
        assert not bool(((W != 0) & ~mask).any())  # every non-zero is kept by the mask
        assert not bool((torch.signbit(W) & (W == 0)).any())  # pruned entries are +0.0
        array = W.numpy()
        enc = encode(array, "2:4", outliers="16:256")  # N:M + K:256 holds: encodable
        assert np.array_equal(decode(enc).view(np.uint32), array.view(np.uint32))
    # more than N per group somewhere: the outliers really sit outside the pattern
    assert any(
        int((weights[n] != 0).reshape(weights[n].shape[0], -1, 4).sum(-1).max()) > 2 for n in masks
    )


def test_prune_rejects_bad_outliers_and_vc(app, tiny_model_dir, tiny_corpora, tmp_path) -> None:
    for option, value, text in (("--outliers", "65:256", "K:256"), ("--outliers", "4:128", "K:256"),
                                ("--vc", "output-ish", "variance correction")):  # fmt: skip
        out = tmp_path / "bad"
        res = run(app, "prune", "--model", tiny_model_dir, "--pattern", "2:4", option, value,
                  "-o", out, *FAST)  # fmt: skip
        assert res.exit_code != 0
        assert text in res.output and "Traceback" not in res.output
        assert not out.exists()
