"""Splitting an already-sparse matrix into its N:M part and its K:256 outlier part.

This is encoder policy (spec section 8.3), shared by the reference and the
fast encoder: an element is *occupied* when its bit pattern is not all zeros
(so -0.0 is occupied and survives the round trip bit for bit).
"""

from __future__ import annotations

import numpy as np

from .errors import FormatError
from .pattern import OutlierPattern, Pattern


def check_nm(main_bits: np.ndarray, pattern: Pattern, what: str = "array") -> None:
    """Raise FormatError naming the first group with more than N occupied elements."""
    rows, cols = main_bits.shape
    counts = np.count_nonzero(main_bits.reshape(rows, cols // pattern.m, pattern.m), axis=2)
    bad = np.argwhere(counts > pattern.n)
    if len(bad):
        r, g = (int(x) for x in bad[0])
        raise FormatError(
            f"{what} violates {pattern}: row {r}, group {g} (columns {g * pattern.m}.."
            f"{(g + 1) * pattern.m - 1}) has {counts[r, g]} non-zeros, at most {pattern.n} allowed"
        )


def check_outlier_counts(mask: np.ndarray, outliers: OutlierPattern) -> None:
    """Raise FormatError naming the first block holding more outliers than its slots."""
    start = 0
    for b, length in enumerate(outliers.block_lengths(mask.shape[1])):
        counts = np.count_nonzero(mask[:, start : start + length], axis=1)
        over = np.flatnonzero(counts > outliers.k_for(length))
        if len(over):
            r = int(over[0])
            raise FormatError(
                f"outliers {outliers}: row {r}, block {b} (columns {start}..{start + length - 1}) "
                f"has {counts[r]} outliers, at most {outliers.k_for(length)} slots"
            )
        start += length


def default_outlier_mask(array: np.ndarray, bits: np.ndarray, pattern: Pattern) -> np.ndarray:
    """Outliers implied by a dense matrix: in each group, the occupied elements beyond N.

    Of a group's occupied elements, the (count - N) largest by magnitude become
    outliers (ties: the lower column index). Groups within N have none.
    """
    rows, cols = bits.shape
    m = pattern.m
    occupied = (bits != 0).reshape(-1, m)
    excess = np.count_nonzero(occupied, axis=1) - pattern.n
    outlier = np.zeros(occupied.shape, dtype=bool)
    over = np.flatnonzero(excess > 0)
    if len(over):  # sort only the groups that hold too many
        groups = occupied[over]
        magnitude = np.abs(array.reshape(-1, m)[over].astype(np.float64))
        key = np.where(groups, -magnitude, np.inf)
        order = np.argsort(key, axis=1, kind="stable")
        place = np.empty_like(order)
        np.put_along_axis(place, order, np.arange(m)[None, :], axis=1)
        outlier[over] = groups & (place < excess[over, None])
    return outlier.reshape(rows, cols)


def split(
    array: np.ndarray,
    bits: np.ndarray,
    pattern: Pattern,
    outliers: OutlierPattern | None,
    outlier_mask: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Return (main_bits, real_outlier_mask) and check both against their patterns."""
    if outliers is None:
        if outlier_mask is not None:
            raise FormatError("outlier_mask given without an outlier pattern (e.g. 16:256)")
        check_nm(bits, pattern)
        return bits, None
    if outlier_mask is None:
        real = default_outlier_mask(array, bits, pattern)
    else:
        outlier_mask = np.asarray(outlier_mask)
        if outlier_mask.shape != bits.shape or outlier_mask.dtype != np.bool_:
            raise FormatError(
                f"outlier_mask must be a bool array of shape {bits.shape}, "
                f"got {outlier_mask.dtype} {outlier_mask.shape}"
            )
        real = outlier_mask & (bits != 0)
    check_outlier_counts(real, outliers)
    main_bits = np.where(real, bits.dtype.type(0), bits)
    check_nm(main_bits, pattern, what="array outside its outliers")
    return main_bits, real
