"""The container (spec section 9): a safetensors file of uint8 streams plus a JSON header.

No pickle and no code on load: safetensors bounds-checks its own header, and
we check ours (format, version, per-stream CRC-32) before decoding a byte.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .dtypes import value_type
from .encoded import EncodedTensor, OutlierStream
from .errors import FormatError
from .pattern import OutlierPattern, Pattern

FORMAT_NAME = "nmlab"
FORMAT_VERSION = "1.0"
SUPPORTED_MAJOR = 1
HEADER_KEY = "nmlab"
STREAMS = ("meta", "values", "outlier_positions", "outlier_values")


def _streams(enc: EncodedTensor) -> dict[str, bytes]:
    streams = {"meta": enc.meta, "values": enc.values}
    if enc.outliers is not None:
        streams["outlier_positions"] = enc.outliers.positions
        streams["outlier_values"] = enc.outliers.values
    return streams


def crc32(data: bytes) -> str:
    return f"{zlib.crc32(data) & 0xFFFFFFFF:08x}"


def tensor_header(enc: EncodedTensor) -> dict[str, Any]:
    streams = _streams(enc)
    return {
        "shape": list(enc.shape),
        "dtype": enc.dtype,
        "dtype_code": value_type(enc.dtype).code,
        "pattern": str(enc.pattern) if enc.pattern is not None else None,
        "layout": enc.layout,
        "joint_groups": enc.joint_groups,
        "outliers": None
        if enc.outliers is None
        else {"pattern": str(enc.outliers.pattern), "layout": enc.outliers.layout},
        "crc32": {name: crc32(data) for name, data in streams.items()},
    }


def save(
    path: str | Path, tensors: dict[str, EncodedTensor], extra: dict[str, Any] | None = None
) -> None:
    """Write tensors to a container; `extra` is free-form JSON kept in the header."""
    from safetensors.numpy import save_file

    header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "tensors": {}, "extra": extra or {}}
    arrays = {}
    for name, enc in tensors.items():
        if ":" in name:
            raise FormatError(f"tensor name {name!r} must not contain ':'")
        header["tensors"][name] = tensor_header(enc)
        for stream, data in _streams(enc).items():
            arrays[f"{name}:{stream}"] = np.frombuffer(data, dtype=np.uint8).copy()
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    save_file(arrays, str(tmp), metadata={HEADER_KEY: json.dumps(header, sort_keys=True)})
    tmp.replace(path)


def read_header(path: str | Path) -> dict[str, Any]:
    """The container's JSON header, checked for format and version."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file") from None
    except Exception as err:  # safetensors raises its own types for a malformed header
        raise FormatError(f"{path}: not a valid safetensors container ({_one_line(err)})") from None
    return _parse_header(metadata, path)


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def _parse_header(metadata: dict[str, str], path: str | Path) -> dict[str, Any]:
    if HEADER_KEY not in metadata:
        raise FormatError(f"{path}: not an nmlab container (no '{HEADER_KEY}' header)")
    try:
        header = json.loads(metadata[HEADER_KEY])
    except json.JSONDecodeError:
        raise FormatError(f"{path}: the nmlab header is not valid JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise FormatError(f"{path}: wrong header: format is not {FORMAT_NAME!r}")
    version = str(header.get("version", ""))
    major = version.split(".")[0]
    if not major.isdigit() or int(major) != SUPPORTED_MAJOR:
        raise FormatError(f"{path}: unsupported format version {version!r} (this reader: 1.x)")
    if not isinstance(header.get("tensors"), dict):
        raise FormatError(f"{path}: header has no tensor table")
    return header


def load(path: str | Path, names: list[str] | None = None) -> dict[str, EncodedTensor]:
    """Read and verify (checksums, header fields) the tensors of a container."""
    from safetensors.numpy import load_file

    header = read_header(path)
    try:
        arrays = load_file(str(path))
    except Exception as err:
        raise FormatError(f"{path}: not a valid safetensors container ({_one_line(err)})") from None
    tensors = {}
    for name, info in header["tensors"].items():
        if names is not None and name not in names:
            continue
        try:
            tensors[name] = _tensor_from(name, info, arrays)
        except FormatError as err:
            raise FormatError(f"{path}: tensor {name!r}: {err}") from None
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise FormatError(f"{path}: tensor {name!r}: malformed header ({err!r})") from None
    if names is not None:
        missing = sorted(set(names) - set(tensors))
        if missing:
            raise FormatError(f"{path}: no tensor named {missing[0]!r}")
    return tensors


def _tensor_from(name: str, info: dict[str, Any], arrays: dict[str, np.ndarray]) -> EncodedTensor:
    streams = {}
    for stream, expected in info["crc32"].items():
        if stream not in STREAMS:
            raise FormatError(f"unknown stream {stream!r}")
        key = f"{name}:{stream}"
        if key not in arrays:
            raise FormatError(f"stream {stream!r} is missing")
        array = arrays[key]
        if array.dtype != np.uint8 or array.ndim != 1:
            raise FormatError(f"stream {stream!r} must be 1-D uint8")
        data = array.tobytes()
        if crc32(data) != expected:
            raise FormatError(f"checksum mismatch in stream {stream!r}")
        streams[stream] = data
    shape = info["shape"]
    if not (isinstance(shape, list) and len(shape) == 2 and all(type(x) is int for x in shape)):
        raise FormatError(f"shape {shape!r} is not [rows, cols]")
    dtype = value_type(str(info["dtype"])).name
    if info.get("dtype_code") not in (None, value_type(dtype).code):
        raise FormatError(f"dtype code {info['dtype_code']!r} does not match dtype {dtype}")
    pattern = Pattern.parse(info["pattern"]) if info["pattern"] is not None else None
    joint = info.get("joint_groups")
    if joint is not None and (type(joint) is not int or joint < 1):
        raise FormatError(f"joint_groups {joint!r} must be a positive integer")
    outliers = None
    if info.get("outliers") is not None:
        if "outlier_positions" not in streams or "outlier_values" not in streams:
            raise FormatError("outlier streams are missing")
        outliers = OutlierStream(
            OutlierPattern.parse(info["outliers"]["pattern"]),
            str(info["outliers"]["layout"]),
            streams["outlier_positions"],
            streams["outlier_values"],
        )
    if "meta" not in streams or "values" not in streams:
        raise FormatError("meta or values stream is missing")
    return EncodedTensor(
        (shape[0], shape[1]),
        dtype,
        pattern,
        str(info["layout"]),
        streams["meta"],
        streams["values"],
        outliers,
        joint,
    )
