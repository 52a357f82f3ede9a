"""One GEMM to simulate: y[tokens, out] = x[tokens, in] @ W[out, in]^T, W given as a container."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import SimulatorError

if TYPE_CHECKING:
    from nmlab.formats import EncodedTensor

ITEMSIZE = {"int8": 1, "float16": 2, "bfloat16": 2, "float32": 4}


@dataclass(frozen=True)
class Workload:
    """Shapes plus the stored stream sizes of the weight, taken from the container."""

    name: str
    tokens: int
    n_out: int
    k_in: int
    dtype: str
    pattern: str  # "dense" or "N:M"
    layout: str
    streams: dict[str, int]  # EncodedTensor.stream_bytes()
    outliers: int  # outlier values held outside the N:M pattern

    @property
    def n_keep(self) -> int:
        return 0 if self.pattern == "dense" else int(self.pattern.split(":")[0])

    @property
    def group_m(self) -> int:
        return 1 if self.pattern == "dense" else int(self.pattern.split(":")[1])

    @property
    def k_eff(self) -> int:
        """Reduction length after the activation-select muxes: K * N / M."""
        return self.k_in * self.n_keep // self.group_m if self.n_keep else self.k_in

    @property
    def weight_bytes(self) -> int:
        return sum(self.streams.values())

    @classmethod
    def from_encoded(cls, enc: EncodedTensor, tokens: int, name: str = "gemm") -> Workload:
        """From an `nmlab.formats.EncodedTensor` [out, in]: sizes from its stored streams."""
        if tokens < 1:
            raise SimulatorError(f"tokens must be >= 1 (got {tokens})")
        n_out, k_in = (int(x) for x in enc.shape)
        if enc.dtype not in ITEMSIZE:
            raise SimulatorError(f"{name}: unsupported dtype {enc.dtype!r}")
        pattern = "dense" if enc.pattern is None else f"{enc.pattern.n}:{enc.pattern.m}"
        if enc.pattern is not None and k_in % enc.pattern.m:
            raise SimulatorError(
                f"{name}: input width {k_in} is not divisible by M={enc.pattern.m} of {pattern}"
            )
        outliers = 0
        if enc.outliers is not None:
            outliers = len(enc.outliers.values) // ITEMSIZE[enc.dtype]
        return cls(
            name, tokens, n_out, k_in, enc.dtype, pattern, enc.layout, enc.stream_bytes(), outliers
        )


def synthetic_weight(n_out: int, k_in: int, pattern: str, dtype: str, seed: int = 0) -> np.ndarray:
    """A random [out, in] weight that satisfies `pattern` (largest N of each M kept)."""
    if pattern != "dense":
        n, m = (int(x) for x in pattern.split(":"))
        if k_in % m:
            raise SimulatorError(f"k={k_in} is not divisible by M={m} of pattern {pattern}")
    rng = np.random.default_rng(seed)
    if dtype == "int8":
        w = rng.integers(-127, 128, size=(n_out, k_in), dtype=np.int8)
        w[w == 0] = 1
    else:
        w = rng.standard_normal((n_out, k_in), dtype=np.float32)
    if pattern != "dense":
        g = w.reshape(n_out, k_in // m, m)
        order = np.argsort(-np.abs(g.astype(np.float32)), axis=-1, kind="stable")
        np.put_along_axis(g, order[..., n:], 0, axis=-1)
    if dtype == "bfloat16":
        import ml_dtypes

        return w.astype(ml_dtypes.bfloat16)
    return w.astype(dtype)


def synthetic_encoded(
    n_out: int, k_in: int, pattern: str, layout: str, dtype: str, seed: int = 0
) -> EncodedTensor:
    """Encode a synthetic weight with the real codec, so stream sizes are the stored ones."""
    from nmlab.formats import FormatError, encode

    w = synthetic_weight(n_out, k_in, pattern, dtype, seed)
    try:
        if pattern == "dense":
            return encode(w, None, layout="dense")
        return encode(w, pattern, layout=layout)
    except FormatError as err:
        raise SimulatorError(str(err)) from None
