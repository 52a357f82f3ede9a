"""Perplexity over non-overlapping windows: exp of the mean next-token NLL."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


def bos_for(model: Any, tokenizer: Any) -> int | None:
    """The BOS id to put before every window, for models that expect one (Gemma's output
    is garbage without it: SmolLM2 needs none), else None."""
    model_type = str(getattr(model.config, "model_type", ""))
    wants = model_type.startswith("gemma") or bool(getattr(tokenizer, "add_bos_token", False))
    return tokenizer.bos_token_id if wants else None


@torch.no_grad()
def perplexity(
    model: Any,
    windows: torch.Tensor,
    desc: str = "ppl",
    progress: bool = True,
    bos_token_id: int | None = None,
) -> float:
    """``windows``: [n, seqlen] token ids, each evaluated alone (no context carried over).

    With ``bos_token_id`` each window is preceded by BOS and all its tokens are predicted.
    """
    nll, count = 0.0, 0
    for ids in tqdm(windows, desc=desc, disable=not progress, leave=False):
        if bos_token_id is not None:
            ids = torch.cat([ids.new_tensor([bos_token_id]), ids])
        ids = ids.unsqueeze(0)
        logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float()
        nll += F.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
        count += ids.shape[1] - 1
    return math.exp(nll / count)
