"""Shared test helpers: random N:M-sparse arrays and vector loading."""

from __future__ import annotations

import json
from pathlib import Path

import ml_dtypes
import numpy as np

from nmlab.formats import EncodedTensor, OutlierPattern, OutlierStream, Pattern

VECTORS = Path(__file__).resolve().parents[2] / "spec" / "vectors"
DTYPES = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32,
          "int8": np.int8}  # fmt: skip
UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32}


def bits_of(array: np.ndarray) -> np.ndarray:
    return array.view(UINT[array.dtype.itemsize])


def random_nm(rng: np.random.Generator, rows: int, cols: int, n: int, m: int, dtype) -> np.ndarray:  # noqa: ANN001
    """At most n occupied per group of m: full, under-full and empty groups, some -0.0."""
    dense = rng.standard_normal((rows, cols)) * 3
    if np.dtype(dtype) == np.int8:
        dense = np.clip(np.round(dense * 10), -128, 127)
    groups = dense.reshape(rows, cols // m, m)
    occupied = rng.integers(0, n + 1, groups.shape[:2])
    occupied = np.where(rng.random(groups.shape[:2]) < 0.7, n, occupied)
    keep = rng.random(groups.shape).argsort(axis=2).argsort(axis=2) < occupied[..., None]
    out = np.where(keep, groups, 0).reshape(rows, cols).astype(dtype)
    if np.dtype(dtype).kind == "f" or np.dtype(dtype) == ml_dtypes.bfloat16:
        negzero = keep.reshape(rows, cols) & (rng.random((rows, cols)) < 0.05)
        out[negzero] = -0.0
    return out


def load_vectors(name: str) -> list[dict]:
    return json.loads((VECTORS / name).read_text())


def encoded_from_vector(v: dict) -> EncodedTensor:
    outliers = None
    if v["outliers"]:
        outliers = OutlierStream(
            OutlierPattern.parse(v["outliers"]),
            v["outlier_layout"],
            bytes.fromhex(v["outlier_positions_hex"]),
            bytes.fromhex(v["outlier_values_hex"]),
        )
    return EncodedTensor(
        tuple(v["shape"]),
        v["dtype"],
        Pattern.parse(v["pattern"]),
        v["layout"],
        bytes.fromhex(v["meta_hex"]),
        bytes.fromhex(v["values_hex"]),
        outliers,
        v["joint_groups"],
    )


def dense_from_vector(v: dict) -> np.ndarray:
    dtype = np.dtype(DTYPES[v["dtype"]])
    return np.frombuffer(bytes.fromhex(v["dense_hex"]), dtype=dtype).reshape(v["shape"])
