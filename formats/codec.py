"""Public encode/decode of one tensor: validation, the N:M/outlier split, dispatch."""

from __future__ import annotations

import numpy as np

from . import fast, reference, sizes
from .dtypes import check_finite, value_type
from .encoded import LAYOUTS, OUTLIER_LAYOUTS, EncodedTensor, OutlierStream
from .errors import FormatError
from .pattern import OutlierPattern, Pattern, parse_outliers, parse_pattern
from .split import split

IMPLEMENTATIONS = {"fast": fast, "reference": reference}


def _implementation(impl: str):  # noqa: ANN202
    try:
        return IMPLEMENTATIONS[impl]
    except KeyError:
        raise FormatError(f"unknown implementation {impl!r} (fast or reference)") from None


def _check_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) != 2:
        raise FormatError(f"expected a 2-D [out, in] weight, got shape {tuple(shape)}")
    rows, cols = (int(x) for x in shape)
    if rows < 1 or cols < 1:
        raise FormatError(f"shape {(rows, cols)} must have at least one row and one column")
    return rows, cols


def encode(
    array: np.ndarray,
    pattern: str | Pattern | None,
    *,
    layout: str = "rank",
    outliers: str | OutlierPattern | None = None,
    outlier_layout: str = "rank",
    outlier_mask: np.ndarray | None = None,
    joint_groups: int | None = None,
    impl: str = "fast",
) -> EncodedTensor:
    """Encode a 2-D [out, in] array that already satisfies `pattern` (spec/format.md).

    With `outliers` (e.g. "16:256"), elements named by `outlier_mask` (or, by
    default, each group's occupied elements beyond N, largest first) go to the
    outlier stream and the rest must satisfy the N:M pattern.
    """
    array = np.asarray(array)
    vtype = value_type(array.dtype)
    shape = _check_shape(array.shape)
    bits = np.ascontiguousarray(array).view(vtype.bits)
    check_finite(bits, vtype, "array")
    if layout not in LAYOUTS:
        raise FormatError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if layout == "dense":
        if pattern is not None or outliers is not None:
            raise FormatError("layout dense takes no pattern and no outliers")
        return EncodedTensor(
            shape, vtype.name, None, "dense", b"", bits.astype("<" + vtype.bits.str[1:]).tobytes()
        )
    if pattern is None:
        raise FormatError(f"layout {layout} needs a pattern such as 8:16")
    pattern = parse_pattern(pattern)
    outliers = parse_outliers(outliers)
    sizes.group_count(shape, pattern)  # raises when the row length is not a multiple of M
    if outlier_layout not in OUTLIER_LAYOUTS:
        raise FormatError(f"unknown outlier layout {outlier_layout!r} (rank or index)")
    if layout == "joint":
        joint_groups = joint_groups or sizes.default_joint_groups(pattern)
    elif joint_groups is not None:
        raise FormatError("joint_groups applies to layout joint only")
    main_bits, real = split(array, bits, pattern, outliers, outlier_mask)
    codec = _implementation(impl)
    if layout == "cutlass":
        from . import cutlass

        if str(pattern) != cutlass.cutlass_pattern(vtype.numpy):
            raise FormatError(
                f"layout cutlass stores {vtype.name} as {cutlass.cutlass_pattern(vtype.numpy)}, "
                f"not {pattern}"
            )
        meta, values = cutlass.encode_stream(main_bits.view(vtype.numpy))
    else:
        meta, values = codec.encode_main(main_bits, pattern, layout, joint_groups)
    stream = None
    if outliers is not None:
        positions, outlier_values = codec.encode_outliers(bits, real, outliers, outlier_layout)
        stream = OutlierStream(outliers, outlier_layout, positions, _le_bytes(outlier_values))
    return EncodedTensor(
        shape, vtype.name, pattern, layout, meta, _le_bytes(values), stream, joint_groups
    )


def _le_bytes(bits: np.ndarray) -> bytes:
    return np.ascontiguousarray(bits).astype(bits.dtype.newbyteorder("<")).tobytes()


def _values_from(data: bytes, count: int, vtype, what: str, check: bool = True) -> np.ndarray:  # noqa: ANN001
    sizes.check_length(data, count * vtype.itemsize, what)
    values = np.frombuffer(data, dtype=vtype.bits.newbyteorder("<"))
    if not values.dtype.isnative:  # pragma: no cover - big-endian hosts only
        values = values.astype(vtype.bits)
    if check:
        check_finite(values, vtype, what)
    return values


def decode(enc: EncodedTensor, *, impl: str = "fast") -> np.ndarray:
    """Decode an EncodedTensor back to the dense array, bit for bit."""
    vtype = value_type(enc.dtype)
    shape = _check_shape(enc.shape)
    if enc.layout not in LAYOUTS:
        raise FormatError(f"unknown layout {enc.layout!r}")
    if enc.layout == "dense":
        values = _values_from(enc.values, shape[0] * shape[1], vtype, "dense value")
        return values.reshape(shape).view(vtype.numpy).copy()  # writable, unlike the buffer
    if enc.pattern is None:
        raise FormatError(f"layout {enc.layout} needs a pattern")
    pattern = parse_pattern(enc.pattern)
    codec = _implementation(impl)
    if enc.layout == "cutlass":
        from . import cutlass

        if str(pattern) != cutlass.cutlass_pattern(vtype.numpy):
            raise FormatError(f"layout cutlass cannot hold {vtype.name} as {pattern}")
        dense = cutlass.decode_stream(enc.meta, enc.values, shape, vtype.numpy)
        check_finite(dense.view(vtype.bits), vtype, "value")
        out = np.ascontiguousarray(dense).view(vtype.bits).reshape(shape).copy()
    else:
        count = sizes.value_count(shape, pattern)
        values = _values_from(enc.values, count, vtype, "value", check=False)
        out = codec.decode_main(
            enc.meta, values, shape, pattern, enc.layout, enc.joint_groups, vtype.exponent_mask
        )
    if enc.outliers is not None:
        o = enc.outliers
        if o.layout not in OUTLIER_LAYOUTS:
            raise FormatError(f"unknown outlier layout {o.layout!r}")
        count = sizes.outlier_slots(shape, o.pattern)
        values = _values_from(o.values, count, vtype, "outlier value")
        index, values = codec.decode_outliers(o.positions, values, shape, o.pattern, o.layout)
        used = values != 0
        flat = out.reshape(-1)
        clash = np.flatnonzero(used & (flat[index] != 0))
        if len(clash):
            r, c = divmod(int(index[clash[0]]), shape[1])
            raise FormatError(f"outlier at row {r}, column {c} overlaps a non-zero N:M value")
        flat[index[used]] = values[used]
    return out.view(vtype.numpy)
