"""The block-by-block driver on tiny random models: masks, sequential inputs, resume."""

from __future__ import annotations

import pytest
import torch

from nmlab.pruning.errors import PruningError
from nmlab.pruning.masks import NM, is_nm
from nmlab.pruning.methods import LayerStats, Method, make_method
from nmlab.pruning.models import load_model
from nmlab.pruning.sequential import (
    Checkpoint,
    block_linears,
    capture_block_inputs,
    check_model,
    prune_sequential,
)


def samples(vocab: int, n: int = 4, seqlen: int = 32) -> torch.Tensor:
    return torch.randint(1, vocab, (n, seqlen), generator=torch.Generator().manual_seed(0))


def recording(store: dict[str, LayerStats], needs: str = "norms", keep: bool = True) -> Method:
    """A method that records each layer's statistics and keeps (or drops) every weight."""

    def fn(name: str, W: torch.Tensor, s: LayerStats):
        store[name] = s
        mask = torch.full_like(W, keep, dtype=torch.bool)
        return W * mask, mask

    return Method("record", needs, fn)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_every_block_linear_is_pruned_nm(tiny_model_dir, method: str) -> None:
    model, _ = load_model(tiny_model_dir)
    result = prune_sequential(
        model, samples(model.config.vocab_size), make_method(method, NM(2, 4)), progress=False
    )
    linears = block_linears(model)
    assert len(linears) == 14 and set(result.sparsity) == set(linears)
    for name, mod in linears.items():
        mask = result.masks[name + ".weight"]
        assert is_nm(mask, 2, 4)
        assert (mod.weight[~mask] == 0).all()
        assert result.sparsity[name] == pytest.approx(0.5)


def test_block_inputs_follow_a_real_forward(tiny_model_dir) -> None:
    """With nothing pruned, the inputs the driver feeds to each layer equal the inputs of
    an ordinary forward pass of the model (so rotary embeddings and masks are right)."""
    model, _ = load_model(tiny_model_dir)
    ids = samples(model.config.vocab_size)
    expected: dict[str, torch.Tensor] = {}
    hooks = [
        mod.register_forward_hook(
            lambda _m, inp, _o, n=name: expected.__setitem__(
                n, expected.get(n, 0) + (inp[0].reshape(-1, inp[0].shape[-1]) ** 2).sum(0)
            )
        )
        for name, mod in block_linears(model).items()
    ]
    with torch.no_grad():
        for row in ids:
            model(input_ids=row.unsqueeze(0))
    for h in hooks:
        h.remove()
    seen: dict[str, LayerStats] = {}
    prune_sequential(model, ids, recording(seen), progress=False)
    for name, stats in seen.items():
        torch.testing.assert_close(stats.sq_norm, expected[name], rtol=1e-4, atol=1e-4)


def test_later_blocks_see_pruned_earlier_blocks(tiny_model_dir) -> None:
    """Drop every weight: block 0 becomes the identity on the residual stream, so block
    1's first linear sees exactly block 0's inputs (both norms start as ones)."""
    model, _ = load_model(tiny_model_dir)
    seen: dict[str, LayerStats] = {}
    prune_sequential(
        model, samples(model.config.vocab_size), recording(seen, keep=False), progress=False
    )
    q0 = seen["model.layers.0.self_attn.q_proj"].sq_norm
    q1 = seen["model.layers.1.self_attn.q_proj"].sq_norm
    torch.testing.assert_close(q0, q1)


def test_nan_activations_are_reported(tiny_model_dir) -> None:
    model, _ = load_model(tiny_model_dir)
    with torch.no_grad():
        model.model.layers[1].post_attention_layernorm.weight[3] = float("nan")
    with pytest.raises(PruningError, match=r"mlp\.gate_proj contain NaN or Inf"):
        prune_sequential(
            model, samples(model.config.vocab_size), make_method("wanda", NM(2, 4)), progress=False
        )


def test_check_model_rejects_width(tiny_model_dir) -> None:
    model, _ = load_model(tiny_model_dir)
    with pytest.raises(PruningError, match="input width 64 is not divisible by M=48"):
        check_model(model, NM(2, 48))


class Interrupt(Exception):
    pass


def test_resume_gives_identical_results(tiny_model_dir, tmp_path) -> None:
    settings = {"run": "test"}
    method = make_method("sparsegpt", NM(2, 4))
    model, _ = load_model(tiny_model_dir)
    ids = samples(model.config.vocab_size)
    full = prune_sequential(model, ids, method, progress=False)
    expected = {k: v.clone() for k, v in model.state_dict().items()}

    calls = []

    def dies_in_block_1(name: str, W: torch.Tensor, s: LayerStats):
        if ".layers.1." in name:
            raise Interrupt
        calls.append(name)
        return method.prune(name, W, s)

    model, _ = load_model(tiny_model_dir)
    ckpt = Checkpoint(tmp_path / "ckpt", settings)
    with pytest.raises(Interrupt):
        prune_sequential(
            model, ids, Method("sparsegpt", "hessian", dies_in_block_1), ckpt, progress=False
        )
    assert len(calls) == 7 and (tmp_path / "ckpt" / "inputs_0001.safetensors").is_file()

    model, _ = load_model(tiny_model_dir)  # a fresh process: dense weights again
    resumed = prune_sequential(
        model, ids, method, Checkpoint(tmp_path / "ckpt", settings), progress=False
    )
    assert resumed.resumed_from == 1
    for k, v in model.state_dict().items():
        assert torch.equal(v, expected[k]), k
    assert resumed.masks.keys() == full.masks.keys()
    assert all(torch.equal(resumed.masks[k], full.masks[k]) for k in full.masks)

    with pytest.raises(PruningError, match="other settings"):
        Checkpoint(tmp_path / "ckpt", {"run": "other"}).open()


def _tiny(kind: str):
    from transformers import (
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    common = dict(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    if kind == "gemma3":
        cfg = Gemma3TextConfig(
            **common,
            head_dim=16,
            sliding_window=8,
            layer_types=["sliding_attention", "full_attention"],
        )
        return Gemma3ForCausalLM(cfg).eval()
    if kind == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common)).eval()
    return MistralForCausalLM(MistralConfig(**common, sliding_window=8)).eval()


@pytest.mark.parametrize("kind", ["gemma3", "qwen2", "mistral"])
def test_other_families(kind: str) -> None:
    """Per-block kwargs (Gemma's sliding vs full attention) are captured per block."""
    model = _tiny(kind)
    ids = samples(97, n=2, seqlen=24)
    expected: dict[str, torch.Tensor] = {}
    for name, mod in block_linears(model).items():
        mod.register_forward_hook(
            lambda _m, inp, _o, n=name: expected.__setitem__(
                n, expected.get(n, 0) + (inp[0].reshape(-1, inp[0].shape[-1]) ** 2).sum(0)
            )
        )
    with torch.no_grad():
        for row in ids:
            model(input_ids=row.unsqueeze(0))
    for mod in block_linears(model).values():
        mod._forward_hooks.clear()
    seen: dict[str, LayerStats] = {}
    prune_sequential(model, ids, recording(seen), progress=False)
    assert seen.keys() == expected.keys()
    for name, stats in seen.items():
        torch.testing.assert_close(stats.sq_norm, expected[name], rtol=1e-4, atol=1e-4)
    result = prune_sequential(model, ids, make_method("sparsegpt", NM(8, 16)), progress=False)
    assert all(is_nm(m, 8, 16) for m in result.masks.values())


def test_capture_returns_inputs_and_kwargs(tiny_model_dir) -> None:
    model, _ = load_model(tiny_model_dir)
    x, kwargs = capture_block_inputs(model, samples(model.config.vocab_size, n=3, seqlen=16))
    assert x.shape == (3, 16, 64) and len(kwargs) == 2
    assert "position_embeddings" in kwargs[0]
