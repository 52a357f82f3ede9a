"""Masks on disk: bool masks packed 8 per byte in a safetensors file.

Each entry is a uint8 tensor (the mask's rows packed with ``numpy.packbits``, little bit
order, rows padded to whole bytes) under the weight's name; the header metadata keeps
each mask's shape as ``"<name>": "out,in"``. True means kept.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import load_file, save_file


def pack_mask(mask: torch.Tensor) -> np.ndarray:
    """[out, in] bool -> [out, ceil(in/8)] uint8 (bit j of byte k = column 8k + j)."""
    return np.packbits(mask.cpu().numpy().astype(bool), axis=-1, bitorder="little")


def unpack_mask(packed: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    bits = np.unpackbits(packed, axis=-1, count=shape[-1], bitorder="little")
    return torch.from_numpy(bits.astype(bool)).reshape(shape)


def save_masks(path: str | os.PathLike[str], masks: dict[str, torch.Tensor]) -> None:
    """Write masks atomically (temporary file, then rename)."""
    path = Path(path)
    tensors = {name: pack_mask(m) for name, m in masks.items()}
    meta = {name: ",".join(str(s) for s in m.shape) for name, m in masks.items()}
    meta["format"] = "nmlab-packed-masks-v1"
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_masks(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read masks written by :func:`save_masks`."""
    with safe_open(str(path), framework="np") as handle:
        meta = handle.metadata() or {}
    packed = load_file(str(path))
    return {
        name: unpack_mask(arr, tuple(int(s) for s in meta[name].split(",")))
        for name, arr in packed.items()
    }
