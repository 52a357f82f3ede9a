"""Driver and CLI features on the tiny random models: SmoothQuant rebalancing (function
kept, Wanda mask invariant, magnitude mask not), output-mode Variance Correction,
unstructured outliers with the K':256 the codec needs, the fine-tuning hook (with resume),
and the zero-shot column of metrics.json."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from nmlab.pruning import pipeline
from nmlab.pruning import tasks as T
from nmlab.pruning.errors import PruningError
from nmlab.pruning.masks import NM, is_nm
from nmlab.pruning.methods import LayerStats, Method, make_method
from nmlab.pruning.models import load_model
from nmlab.pruning.sequential import (
    Checkpoint,
    _block_out,
    block_linears,
    capture_block_inputs,
    decoder_layers,
    prune_sequential,
    smooth_block,
)
from nmlab.pruning.storage import load_masks

from .test_sequential import _tiny, samples
from .test_zeroshot import fake_sdist

FAST = dict(calib=4, seqlen=32, eval_windows=2, progress=False)


def keep_all(needs: str = "norms") -> Method:
    def fn(_name: str, W: torch.Tensor, _s: LayerStats):
        return W.clone(), torch.ones_like(W, dtype=torch.bool)

    return Method("keep", needs, fn)  # type: ignore[arg-type]


def _perturb_norms(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.2 * torch.randn(p.shape, generator=g))


# ---------------------------------------------------------------- rebalancing


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_smoothing_keeps_the_dense_function(kind: str, tiny_model_dir) -> None:
    """Folded norms + scaled columns (q/k/v, gate/up) and W·diag(s) pruned then folded back
    (o_proj, down_proj): with nothing pruned the model computes the same logits."""
    if kind == "llama":
        model, _ = load_model(tiny_model_dir)
        vocab, up_norm = model.config.vocab_size, "post_attention_layernorm"
    else:
        model, vocab, up_norm = _tiny("gemma3"), 97, "pre_feedforward_layernorm"
    _perturb_norms(model)
    ids = samples(vocab, n=3, seqlen=24)
    with torch.no_grad():
        before = model(input_ids=ids).logits

    # which norm feeds which linears: found numerically (Gemma-3 differs from Llama)
    layer = decoder_layers(model)[0]
    x, kwargs = capture_block_inputs(model, ids)
    lins = {n: m for n, m in block_linears(model).items() if ".layers.0." in n}
    old_norms = {n: p.detach().clone() for n, p in layer.named_parameters() if "norm" in n}
    with torch.no_grad():
        y0 = torch.cat([_block_out(layer, x[j : j + 1], kwargs[0]) for j in range(3)])
    scales, changed = smooth_block(layer, lins, x, kwargs[0], 0.5)
    assert sorted(changed) == sorted(["input_layernorm", up_norm])
    assert sorted(n.rsplit(".", 1)[1] for n in scales) == ["down_proj", "o_proj"]
    with torch.no_grad():
        y1 = torch.cat([_block_out(layer, x[j : j + 1], kwargs[0]) for j in range(3)])
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-5)  # dense block output kept
    new_norms = dict(layer.named_parameters())
    assert not torch.allclose(
        new_norms["input_layernorm.weight"], old_norms["input_layernorm.weight"]
    )

    model2 = load_model(tiny_model_dir)[0] if kind == "llama" else _tiny("gemma3")
    _perturb_norms(model2)  # the same model as at the start, in a fresh copy
    prune_sequential(model2, ids, keep_all(), progress=False, smooth=0.5)
    with torch.no_grad():
        after = model2(input_ids=ids).logits
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_wanda_mask_is_invariant_magnitude_is_not(tiny_model_dir) -> None:
    ids = samples(121, n=6)
    masks = {}
    for method in ("wanda", "magnitude"):
        for smooth in (None, 0.5):
            model, _ = load_model(tiny_model_dir)
            result = prune_sequential(
                model, ids, make_method(method, NM(2, 4)), progress=False, smooth=smooth
            )
            masks[method, smooth] = result.masks
            assert all(is_nm(m, 2, 4) for m in result.masks.values())
    same = lambda a, b: all(torch.equal(a[k], b[k]) for k in a)  # noqa: E731
    assert same(masks["wanda", None], masks["wanda", 0.5])
    assert not same(masks["magnitude", None], masks["magnitude", 0.5])


def test_smooth_recorded_and_checked(tiny_model_dir, tiny_corpora, tmp_path) -> None:
    metrics = pipeline.prune_model(str(tiny_model_dir), "wanda", "2:4", tmp_path / "o",
                                   smooth=0.5, **FAST)  # fmt: skip
    assert metrics["smooth"] == 0.5
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["smooth"] == 0.5
    ref = pipeline.prune_model(str(tiny_model_dir), "wanda", "2:4", tmp_path / "r", **FAST)
    assert ref["smooth"] is None
    a, b = (
        load_masks(tmp_path / "o" / "masks.safetensors"),
        load_masks(tmp_path / "r" / "masks.safetensors"),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(PruningError, match="alpha"):
        pipeline.prune_model(
            str(tiny_model_dir), "wanda", "2:4", tmp_path / "x", smooth=1.5, **FAST
        )
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- output-mode VC


def test_output_vc_in_the_driver(tiny_model_dir) -> None:
    ids = samples(121)
    model, _ = load_model(tiny_model_dir)
    plain = prune_sequential(model, ids, make_method("wanda", NM(2, 4)), progress=False)
    model, _ = load_model(tiny_model_dir)
    method = make_method("wanda", NM(2, 4), vc="output")
    assert method.moments
    seen: dict[str, LayerStats] = {}
    inner = method.prune

    def spy(name: str, W: torch.Tensor, s: LayerStats):
        seen[name] = s
        return inner(name, W, s)

    method.prune = spy
    corrected = prune_sequential(model, ids, method, progress=False)
    block0 = [k for k in plain.masks if ".layers.0." in k]  # later blocks see other inputs
    assert all(torch.equal(plain.masks[k], corrected.masks[k]) for k in block0)
    s = seen["model.layers.0.self_attn.q_proj"]
    assert s.n == 4 * 32 and s.sum_xxT.shape == (64, 64) and s.sum_x.dtype == torch.float64


# ---------------------------------------------------------------- unstructured outliers


def test_unstructured_outliers_are_encodable(tiny_model_dir, tiny_corpora, tmp_path) -> None:
    from nmlab.formats import decode, encode

    out = tmp_path / "u"
    metrics = pipeline.prune_model(str(tiny_model_dir), "wanda", "2:4", out, outliers="4:256",
                                   outlier_selection="unstructured", **FAST)  # fmt: skip
    assert metrics["outliers"] == "4:256" and metrics["outlier_selection"] == "unstructured"
    k = metrics["outliers_encoded"]
    assert k is not None and int(k.split(":")[0]) >= 4
    weights = load_file(str(out / "model.safetensors"))
    masks = load_masks(out / "masks.safetensors")
    for name, mask in masks.items():
        w = np.where(mask.numpy(), weights[name].numpy(), np.float32(0))
        enc = encode(w, "2:4", layout="rank", outliers=k)
        assert np.array_equal(decode(enc).view(np.uint32), w.view(np.uint32))
    structured = pipeline.prune_model(str(tiny_model_dir), "sparsegpt", "2:4", tmp_path / "s",
                                      outliers="4:256", **FAST)  # fmt: skip
    assert structured["outliers_encoded"] == "4:256"
    with pytest.raises(PruningError, match="needs outliers"):
        pipeline.prune_model(str(tiny_model_dir), "wanda", "2:4", tmp_path / "x",
                             outlier_selection="unstructured", **FAST)  # fmt: skip
    with pytest.raises(PruningError, match="outlier selection"):
        pipeline.prune_model(str(tiny_model_dir), "wanda", "2:4", tmp_path / "x",
                             outliers="4:256", outlier_selection="free", **FAST)  # fmt: skip


# ---------------------------------------------------------------- fine-tuning hook


class Recorder:
    """A fake finetune: records its arguments and scales every kept q_proj weight."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, layer, x, y_dense, kwargs, masks):
        self.calls.append({"x": x.clone(), "y": y_dense.clone(), "masks": dict(masks)})
        with torch.no_grad():
            layer.self_attn.q_proj.weight.mul_(1.5)
        return {"mse_before": 1.0, "mse_after": 0.5, "steps": 1}


class Interrupt(Exception):
    pass


def test_finetune_hook_arguments_and_effect(tiny_model_dir, tmp_path) -> None:
    ids = samples(121)
    dense, _ = load_model(tiny_model_dir)
    x0, kwargs = capture_block_inputs(dense, ids)
    with torch.no_grad():
        y0 = torch.cat(
            [_block_out(dense.model.layers[0], x0[j : j + 1], kwargs[0]) for j in range(4)]
        )

    model, _ = load_model(tiny_model_dir)
    rec = Recorder()
    method = make_method("wanda", NM(2, 4))
    result = prune_sequential(model, ids, method, progress=False, finetune=rec)
    info = {"mse_before": 1.0, "mse_after": 0.5, "steps": 1}
    assert len(rec.calls) == 2 and result.finetune == [info, info]
    first = rec.calls[0]
    torch.testing.assert_close(first["x"], x0)
    torch.testing.assert_close(first["y"], y0, rtol=1e-5, atol=1e-5)  # the DENSE outputs
    local = [f"self_attn.{p}_proj.weight" for p in "qkvo"]
    local += [f"mlp.{p}_proj.weight" for p in ("gate", "up", "down")]
    assert sorted(first["masks"]) == sorted(local)
    assert all(v.dtype == torch.bool for v in first["masks"].values())
    # the change made by finetune is what block 1 sees, and what the model keeps
    with torch.no_grad():
        x1 = torch.cat(
            [_block_out(model.model.layers[0], x0[j : j + 1], kwargs[0]) for j in range(4)]
        )
    torch.testing.assert_close(rec.calls[1]["x"], x1)
    ref, _ = load_model(tiny_model_dir)
    plain = prune_sequential(ref, ids, method, progress=False)
    w = model.model.layers[0].self_attn.q_proj.weight
    torch.testing.assert_close(w, 1.5 * ref.model.layers[0].self_attn.q_proj.weight)
    assert plain.finetune == []

    # resume: a run killed in block 1 ends like an uninterrupted one, finetune results too
    settings = {"run": "ft"}
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    killer = Method(method.name, method.needs, lambda n, W, s: (_ for _ in ()).throw(Interrupt)
                    if ".layers.1." in n else method.prune(n, W, s))  # fmt: skip
    m2, _ = load_model(tiny_model_dir)
    with pytest.raises(Interrupt):
        prune_sequential(m2, ids, killer, Checkpoint(tmp_path / "c", settings), False,
                         finetune=Recorder())  # fmt: skip
    m3, _ = load_model(tiny_model_dir)
    rec3 = Recorder()
    resumed = prune_sequential(m3, ids, method, Checkpoint(tmp_path / "c", settings), False,
                               finetune=rec3)  # fmt: skip
    assert resumed.resumed_from == 1 and len(rec3.calls) == 1 and len(resumed.finetune) == 2
    for k, v in m3.state_dict().items():
        torch.testing.assert_close(v, expected[k], rtol=0, atol=0)


def test_smooth_resume_restores_folded_norms(tiny_model_dir, tmp_path) -> None:
    ids = samples(121)
    method = make_method("magnitude", NM(2, 4))
    model, _ = load_model(tiny_model_dir)
    prune_sequential(model, ids, method, progress=False, smooth=0.5)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    killer = Method(method.name, method.needs, lambda n, W, s: (_ for _ in ()).throw(Interrupt)
                    if ".layers.1." in n else method.prune(n, W, s))  # fmt: skip
    m2, _ = load_model(tiny_model_dir)
    with pytest.raises(Interrupt):
        prune_sequential(m2, ids, killer, Checkpoint(tmp_path / "c", {}), False, smooth=0.5)
    m3, _ = load_model(tiny_model_dir)
    prune_sequential(m3, ids, method, Checkpoint(tmp_path / "c", {}), False, smooth=0.5)
    for k, v in m3.state_dict().items():
        assert torch.equal(v, expected[k]), k


def test_real_ebft_runs_one_epoch(tiny_model_dir, tiny_corpora, tmp_path) -> None:
    pytest.importorskip("nmlab.pruning.ebft")
    metrics = pipeline.prune_model(str(tiny_model_dir), "wanda", "2:4", tmp_path / "e",
                                   ebft_epochs=1, ebft_samples=2, **FAST)  # fmt: skip
    ebft = metrics["ebft"]
    assert ebft["epochs"] == 1 and ebft["samples"] == 2 and len(ebft["blocks"]) == 2
    for block in ebft["blocks"]:
        assert block["mse_after"] <= block["mse_before"] + 1e-9
    weights = load_file(str(tmp_path / "e" / "model.safetensors"))
    for name, mask in load_masks(tmp_path / "e" / "masks.safetensors").items():
        assert is_nm(mask, 2, 4)
        pruned = weights[name][~mask]
        assert (pruned == 0).all() and not torch.signbit(pruned).any()
    with pytest.raises(PruningError, match="ebft-samples"):
        pipeline.prune_model(str(tiny_model_dir), "wanda", "2:4", tmp_path / "x",
                             ebft_epochs=1, ebft_samples=5, **FAST)  # fmt: skip


# ---------------------------------------------------------------- zero-shot column


@pytest.fixture()
def sdist(tmp_path, monkeypatch):
    path = fake_sdist(tmp_path / "bigbench-1.0.0.tar.gz")
    monkeypatch.setattr(T, "SDIST_SHA256", hashlib.sha256(path.read_bytes()).hexdigest())
    monkeypatch.setenv("NMLAB_BIGBENCH_URL", (tmp_path / "unreachable").as_uri())
    return path


def test_zeroshot_column(tiny_model_dir, tiny_corpora, sdist, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(T.SDIST_ENV, raising=False)
    loaded = []
    real_load = pipeline.load_model
    monkeypatch.setattr(
        pipeline, "load_model", lambda *a, **k: loaded.append(1) or real_load(*a, **k)
    )
    with pytest.raises(PruningError, match="unknown task"):
        pipeline.prune_model(str(tiny_model_dir), "wanda", "2:4", tmp_path / "x",
                             zeroshot_tasks=["social_iqa", "nope"], **FAST)  # fmt: skip
    with pytest.raises(PruningError, match=T.SDIST_ENV):  # files missing: fails fast too
        pipeline.prune_model(str(tiny_model_dir), "wanda", "2:4", tmp_path / "x",
                             zeroshot_tasks=["social_iqa"], **FAST)  # fmt: skip
    assert not loaded and not (tmp_path / "x").exists()

    monkeypatch.setenv(T.SDIST_ENV, str(sdist))
    metrics = pipeline.prune_model(str(tiny_model_dir), "wanda", "2:4", tmp_path / "z",
                                   zeroshot_tasks=["social_iqa", "winowhy"], zeroshot_limit=3,
                                   **FAST)  # fmt: skip
    z = metrics["zeroshot"]
    assert set(z["tasks"]) == {"social_iqa", "winowhy"} and z["limit"] == 3
    assert z["tasks"]["social_iqa"]["n"] == 3 and 0 <= z["mean_acc_norm"] <= 1
    saved = json.loads((tmp_path / "z" / "metrics.json").read_text())
    assert saved["zeroshot"] == json.loads(json.dumps(z))


# ---------------------------------------------------------------- the CLI flags


def test_cli_flags_reach_metrics(tiny_model_dir, tiny_corpora, tmp_path) -> None:
    import typer
    from typer.testing import CliRunner

    from nmlab.pruning.cli import register

    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:
        pass

    out = tmp_path / "c"
    args = ["prune", "--model", str(tiny_model_dir), "--method", "magnitude", "--pattern", "2:4",
            "--smooth", "0.5", "--vc", "output", "--outliers", "4:256",
            "--outlier-selection", "unstructured", "-o", str(out),
            "--calib", "4", "--seqlen", "32", "--eval-windows", "2", "-q"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["smooth"] == 0.5 and metrics["vc"] == "output"
    assert metrics["outlier_selection"] == "unstructured" and metrics["outliers_encoded"]
    assert metrics["ebft"] is None and "zeroshot" not in metrics
    bad = CliRunner().invoke(app, [*args[:13], "-o", str(tmp_path / "b"), "--outlier-selection",
                                   "free", "--calib", "4", "--seqlen", "32", "-q"])  # fmt: skip
    assert bad.exit_code == 2 and "outlier selection" in bad.stderr
    assert not (tmp_path / "b").exists()
