"""EBFT of one pruned decoder block of a tiny random Llama: the MSE falls, the mask holds
(+0.0 bitwise), nothing else moves, and bad input is a PruningError."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from nmlab.pruning.ebft import EbftConfig, finetune_block
from nmlab.pruning.errors import PruningError
from nmlab.pruning.masks import NM
from nmlab.pruning.scores import magnitude_score, prune_by_score
from nmlab.pruning.sequential import _block_out, capture_block_inputs, decoder_layers

FAST = EbftConfig(epochs=3, lr=1e-3)


def _tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture()
def case():
    """(pruned block, inputs, dense targets, kwargs, masks) for 4 samples x 16 tokens."""
    model = _tiny_llama()
    samples = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(1))
    x, kwargs = capture_block_inputs(model, samples)
    block = decoder_layers(model)[0]
    with torch.no_grad():
        y = torch.cat([_block_out(block, x[j : j + 1], kwargs[0]) for j in range(len(x))])
        masks = {}
        for name, mod in block.named_modules():
            if isinstance(mod, torch.nn.Linear):
                W, mask = prune_by_score(mod.weight, magnitude_score(mod.weight), NM(2, 4))
                mod.weight.copy_(W)
                masks[f"{name}.weight"] = mask
    return block, x, y, kwargs[0], masks


def _params(block) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in block.named_parameters()}


def test_mse_falls_and_mask_holds_bitwise(case):
    block, x, y, kw, masks = case
    masks_before = {n: m.clone() for n, m in masks.items()}
    before = _params(block)
    stats = finetune_block(block, x, y, kw, masks, FAST)
    assert stats["steps"] == 3 * 4 and stats["seconds"] > 0
    assert stats["mse_after"] < stats["mse_before"]
    after = _params(block)
    for name, mask in masks.items():
        assert torch.equal(mask, masks_before[name])
        pruned = after[name][~mask]
        # exactly +0.0: bit pattern 0 (no -0.0)
        assert (pruned.view(torch.int32) == 0).all(), name
        assert not torch.equal(after[name][mask], before[name][mask]), name  # it trained
    for name in after:
        if name not in masks:  # norms and anything unnamed: bit-identical
            assert torch.equal(after[name], before[name]), name
    # the reported MSE is the block's MSE on those samples
    with torch.no_grad():
        out = torch.cat([_block_out(block, x[j : j + 1], kw) for j in range(len(x))])
    assert float(((out - y) ** 2).mean()) == pytest.approx(stats["mse_after"], rel=1e-5)


def test_requires_grad_and_mode_restored(case):
    block, x, y, kw, masks = case
    norm = next(n for n, _ in block.named_parameters() if n not in masks)
    dict(block.named_parameters())[norm].requires_grad_(False)
    flags = {n: p.requires_grad for n, p in block.named_parameters()}
    block.train()
    with torch.no_grad():  # as the driver calls it
        finetune_block(block, x, y, kw, masks, EbftConfig(epochs=1))
    assert {n: p.requires_grad for n, p in block.named_parameters()} == flags
    assert all(p.grad is None for p in block.parameters())
    assert block.training


def test_restored_after_an_error(case, monkeypatch):
    block, x, y, kw, masks = case
    flags = {n: p.requires_grad for n, p in block.named_parameters()}

    def boom(*args, **kwargs):
        raise RuntimeError("optimizer failed")

    monkeypatch.setattr(torch.optim.AdamW, "step", boom)
    with pytest.raises(RuntimeError):
        finetune_block(block, x, y, kw, masks, EbftConfig())
    assert {n: p.requires_grad for n, p in block.named_parameters()} == flags


def test_deterministic_for_a_seed(case):
    block, x, y, kw, masks = case
    other = copy.deepcopy(block)
    third = copy.deepcopy(block)
    config = EbftConfig(epochs=2, lr=1e-3, samples=3, seed=5)
    a = finetune_block(block, x, y, kw, masks, config)
    b = finetune_block(other, x, y, kw, masks, config)
    finetune_block(third, x, y, kw, masks, replace(config, seed=6))
    assert a["mse_after"] == b["mse_after"] and a["steps"] == b["steps"] == 2 * 3
    for (n, p), q in zip(block.named_parameters(), other.parameters(), strict=True):
        assert torch.equal(p, q), n
    pairs = zip(block.parameters(), third.parameters(), strict=True)
    assert any(not torch.equal(p, r) for p, r in pairs)


def test_samples_and_batches(case):
    block, x, y, kw, masks = case
    stats = finetune_block(block, x, y, kw, masks, EbftConfig(epochs=1, batch_size=3))
    assert stats["steps"] == 2  # 3 + 1 samples
    assert stats["mse_after"] < stats["mse_before"]
    two = finetune_block(block, x, y, kw, masks, EbftConfig(epochs=2, samples=2))
    assert two["steps"] == 4


def test_gradient_clipping_bounds_each_update(case, monkeypatch):
    """The clipped gradient norm never exceeds grad_clip (spy on the clip call), and it is
    called on exactly the trained parameters with their pruned gradients zeroed."""
    block, x, y, kw, masks = case
    seen = []
    real = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *args, **kwargs):
        params = list(params)
        total = real(params, max_norm, *args, **kwargs)
        after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
        seen.append((float(total), float(after), max_norm, len(params)))
        trained = dict(block.named_parameters())
        for name, mask in masks.items():
            assert (trained[name].grad[~mask] == 0).all()
        return total

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    y_far = y + 100.0  # huge loss -> huge raw gradients
    finetune_block(block, x, y_far, kw, masks, EbftConfig(epochs=1, grad_clip=0.01))
    assert len(seen) == 4
    for total, after, max_norm, count in seen:
        assert max_norm == 0.01 and count == len(masks)
        assert total > 0.01 and after <= 0.01 * (1 + 1e-4)


def test_huge_lr_update_stays_bounded(case):
    """Adam's step is at most ~lr per element per step, whatever the loss scale."""
    block, x, y, kw, masks = case
    before = _params(block)
    lr = 0.5
    finetune_block(block, x, y * 1e6, kw, masks, EbftConfig(epochs=1, lr=lr, weight_decay=0))
    after = _params(block)
    for name in masks:
        assert float((after[name] - before[name]).abs().max()) <= 4 * lr * (1 + 1e-3)
        assert torch.isfinite(after[name]).all()


def test_outliers_in_the_mask_are_trained(case):
    """A kept position outside the N:M pattern (an outlier) stays non-zero and trains."""
    block, x, y, kw, masks = case
    name = "mlp.down_proj.weight"
    params = dict(block.named_parameters())
    dense_col = torch.ones_like(masks[name])
    masks = {**masks, name: masks[name] | (torch.arange(dense_col.shape[1]) == 1)}
    with torch.no_grad():
        params[name][:, 1] = 0.05
    finetune_block(block, x, y, kw, masks, FAST)
    col = params[name][:, 1]
    assert (col != 0).all() and not torch.equal(col, torch.full_like(col, 0.05))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.update(targets=c["targets"][:, :-1]), "must both be"),
        (lambda c: c.update(inputs=c["inputs"][0]), "must both be"),
        (lambda c: c["inputs"].__setitem__((0, 0, 0), float("nan")), "inputs contain NaN"),
        (lambda c: c["targets"].__setitem__((1, 2, 3), float("inf")), "targets contain NaN"),
        (lambda c: c["masks"].__setitem__("mlp.nope.weight", None), "does not have"),
        (
            lambda c: c["masks"].__setitem__("mlp.up_proj.weight", torch.ones(2, 2, dtype=bool)),
            "the parameter is",
        ),
        (
            lambda c: c["masks"].__setitem__("mlp.up_proj.weight", torch.ones(64, 32)),
            "must be bool",
        ),
        (lambda c: c.update(masks={}), "no masks"),
        (lambda c: c.update(config=EbftConfig(epochs=-1)), "epochs"),
        (lambda c: c.update(config=EbftConfig(epochs=1.5)), "epochs"),
        (lambda c: c.update(config=EbftConfig(lr=0)), "lr"),
        (lambda c: c.update(config=EbftConfig(lr=float("nan"))), "lr"),
        (lambda c: c.update(config=EbftConfig(weight_decay=-1)), "weight_decay"),
        (lambda c: c.update(config=EbftConfig(betas=(0.9, 1.0))), "betas"),
        (lambda c: c.update(config=EbftConfig(betas=(0.9,))), "betas"),
        (lambda c: c.update(config=EbftConfig(grad_clip=0)), "grad_clip"),
        (lambda c: c.update(config=EbftConfig(batch_size=0)), "batch_size"),
        (lambda c: c.update(config=EbftConfig(samples=0)), "samples"),
        (lambda c: c.update(config=EbftConfig(seed=None)), "seed"),
    ],
)
def test_bad_input_is_a_pruning_error(case, change, message):
    block, x, y, kw, masks = case
    call = {"inputs": x.clone(), "targets": y.clone(), "masks": dict(masks), "config": FAST}
    change(call)
    before = _params(block)
    with pytest.raises(PruningError, match=message):
        finetune_block(block, call["inputs"], call["targets"], kw, call["masks"], call["config"])
    after = _params(block)
    assert all(torch.equal(before[n], after[n]) for n in before)  # nothing touched
