"""In-memory form of one encoded tensor: the streams of spec/format.md plus their header."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .pattern import OutlierPattern, Pattern

LAYOUTS = ("rank", "joint", "bitmask", "positional", "cutlass", "dense")
OUTLIER_LAYOUTS = ("rank", "index")


@dataclass(frozen=True)
class OutlierStream:
    """K:256 outliers of one tensor: position stream and value stream (spec section 7)."""

    pattern: OutlierPattern
    layout: str  # "rank" | "index"
    positions: bytes
    values: bytes


@dataclass(frozen=True)
class EncodedTensor:
    """One [out, in] weight as streams. `meta` holds positions, `values` the kept values.

    For layout "dense" there is no pattern and `meta` is empty.
    """

    shape: tuple[int, int]
    dtype: str  # "float16" | "bfloat16" | "float32" | "int8"
    pattern: Pattern | None
    layout: str
    meta: bytes
    values: bytes
    outliers: OutlierStream | None = None
    joint_groups: int | None = None  # groups per joint word, layout "joint" only

    @property
    def elements(self) -> int:
        return self.shape[0] * self.shape[1]

    def stream_bytes(self) -> dict[str, int]:
        """Bytes per stream, as stored (after byte padding)."""
        sizes = {"meta": len(self.meta), "values": len(self.values)}
        if self.outliers is not None:
            sizes["outlier_positions"] = len(self.outliers.positions)
            sizes["outlier_values"] = len(self.outliers.values)
        return sizes

    def bits_per_element(self) -> dict[str, float]:
        """Stored bits per dense element, per stream and in total."""
        per = {k: 8 * v / self.elements for k, v in self.stream_bytes().items()}
        per["total"] = sum(per.values())
        return per


def stream_totals(tensors: Iterable[EncodedTensor]) -> tuple[int, dict[str, int]]:
    """(dense elements, stored bytes per stream) summed over several encoded tensors."""
    elements, streams = 0, {}
    for enc in tensors:
        elements += enc.elements
        for name, nbytes in enc.stream_bytes().items():
            streams[name] = streams.get(name, 0) + nbytes
    return elements, streams
