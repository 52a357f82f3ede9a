"""Value dtypes of the format (spec section 6): names, codes, bit views, finiteness."""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

from .errors import FormatError


@dataclass(frozen=True)
class ValueType:
    name: str
    code: int
    numpy: np.dtype
    bits: np.dtype  # unsigned integer of the same width: the codec moves bit patterns
    exponent_mask: int | None  # all-ones exponent means Inf/NaN; None for integers

    @property
    def itemsize(self) -> int:
        return self.numpy.itemsize


VALUE_TYPES: dict[str, ValueType] = {
    t.name: t
    for t in (
        ValueType("float16", 1, np.dtype(np.float16), np.dtype(np.uint16), 0x7C00),
        ValueType("bfloat16", 2, np.dtype(ml_dtypes.bfloat16), np.dtype(np.uint16), 0x7F80),
        ValueType("float32", 3, np.dtype(np.float32), np.dtype(np.uint32), 0x7F800000),
        ValueType("int8", 4, np.dtype(np.int8), np.dtype(np.uint8), None),
    )
}


def value_type(dtype: str | np.dtype | type) -> ValueType:
    """Look up a value type by name or numpy dtype."""
    if isinstance(dtype, str) and dtype in VALUE_TYPES:
        return VALUE_TYPES[dtype]
    try:
        np_dtype = np.dtype(dtype)
    except TypeError as err:
        raise FormatError(f"unsupported dtype {dtype!r}") from err
    for t in VALUE_TYPES.values():
        if t.numpy == np_dtype:
            return t
    supported = ", ".join(VALUE_TYPES)
    raise FormatError(f"unsupported dtype {np_dtype}; supported: {supported}")


def non_finite_count(bits: np.ndarray, vtype: ValueType) -> int:
    """How many bit patterns in `bits` are Inf or NaN for `vtype`."""
    if vtype.exponent_mask is None:
        return 0
    from .kernels import count_non_finite

    return int(count_non_finite(bits.reshape(-1), vtype.exponent_mask))


def check_finite(bits: np.ndarray, vtype: ValueType, what: str) -> None:
    count = non_finite_count(bits, vtype)
    if count:
        raise FormatError(f"{what}: {count} non-finite value(s) (Inf/NaN) in {vtype.name}")
