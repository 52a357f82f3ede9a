"""The published SparseGPT implementation, loaded for side-by-side checks.

llm-compressor (PyPI ``llmcompressor``, installed with ``--no-deps``) ships the reference
algorithm as pure functions in ``modifiers/pruning/sparsegpt/sgpt_sparsify.py``. That one
file is loaded by path, without importing the heavy package; ``loguru``, its only other
import, is replaced by a stand-in when absent. Nothing of it is copied into nmlab.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import types
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from .masks import NM, Pattern

REFERENCE_FILE = "modifiers/pruning/sparsegpt/sgpt_sparsify.py"


@lru_cache(maxsize=1)
def load_reference() -> Any | None:
    """The reference module, or None when llmcompressor is not installed."""
    spec = importlib.util.find_spec("llmcompressor")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / REFERENCE_FILE
    if not path.is_file():
        return None
    if importlib.util.find_spec("loguru") is None and "loguru" not in sys.modules:
        stub = types.ModuleType("loguru")
        stub.logger = logging.getLogger("sgpt_reference")  # type: ignore[attr-defined]
        sys.modules["loguru"] = stub
    mod_spec = importlib.util.spec_from_file_location("_nmlab_sgpt_reference", path)
    assert mod_spec is not None and mod_spec.loader is not None
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


def reference_sparsify(
    W: torch.Tensor,
    H: torch.Tensor,
    pattern: Pattern,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the reference on (W, H); returns (W', kept mask) like ``sparsify_weight``.

    The reference counts *pruned* weights per group (prune_n = M - N) and marks the mask
    only through zeros, so the mask is read back as W' != 0.
    """
    ref = load_reference()
    if ref is None:
        raise RuntimeError("llmcompressor is not installed")
    layer = torch.nn.Linear(W.shape[1], W.shape[0], bias=False)
    with torch.no_grad():
        layer.weight.copy_(W)
    if isinstance(pattern, NM):
        sparsity, prune_n, prune_m = pattern.sparsity, pattern.m - pattern.n, pattern.m
    else:
        sparsity, prune_n, prune_m = pattern.sparsity, 0, 0
    _, W_ref = ref.sparsify_weight(
        module=layer,
        hessians_dict={layer: H.clone()},
        sparsity=sparsity,
        prune_n=prune_n,
        prune_m=prune_m,
        block_size=blocksize,
        dampening_frac=percdamp,
        preserve_sparsity_mask=False,
    )
    return W_ref.detach(), W_ref != 0
