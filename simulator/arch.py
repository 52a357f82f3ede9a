"""Typed hardware description, loaded from a TOML file and validated field by field.

A designer edits the TOML, never this file. Layout of an architecture file:

    name = "..."
    [array]      rows, cols, dataflow ("ws" | "os"), mac_dtypes, clock_mhz
    [buffers.weights|inputs|outputs]  size_kib, bandwidth_bytes_per_cycle, energy_pj_per_64bit
    [dram]       bandwidth_bytes_per_cycle, energy_pj_per_bit
    [mapping]    token_tile = "auto" | "all" | N
    [sparse]     native = ["dense", "2:4", ...], outlier_side_path, outlier_macs_per_cycle,
                 select_mux = true
    [[sparse.decoders]]  name, layouts, patterns, groups_per_cycle, latency_cycles,
                         energy_pj_per_group
    energy_table = "energy_45nm"   (a preset name in configs/ or a path)

Energies left out (or 0 for "take the default") come from the energy table.
"""

from __future__ import annotations

import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import SimulatorError

Dtype = Literal["int8", "float16", "bfloat16", "float32"]
Layout = Literal["rank", "joint", "bitmask", "positional", "cutlass"]
_PATTERN = re.compile(r"^(\d+):(\d+)$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArrayConfig(_Strict):
    """The PE array: rows map the reduction (ws) or the tokens (os), cols the outputs."""

    rows: int = Field(ge=1, le=1024)
    cols: int = Field(ge=1, le=1024)
    dataflow: Literal["ws", "os"]
    mac_dtypes: list[Dtype] = Field(min_length=1)
    clock_mhz: float = Field(gt=0, le=10_000)


class BufferConfig(_Strict):
    """One on-chip SRAM buffer (double-buffered: half is filled while half is read)."""

    size_kib: float = Field(gt=0, le=1_048_576)
    bandwidth_bytes_per_cycle: float = Field(gt=0, le=1_048_576)
    energy_pj_per_64bit: float | None = Field(default=None, ge=0, le=1e6)


class Buffers(_Strict):
    weights: BufferConfig
    inputs: BufferConfig
    outputs: BufferConfig


class DramConfig(_Strict):
    bandwidth_bytes_per_cycle: float = Field(gt=0, le=1_048_576)
    energy_pj_per_bit: float | None = Field(default=None, ge=0, le=1e6)


class DecoderConfig(_Strict):
    """A metadata decoder: turns position metadata into activation-select signals."""

    name: str = Field(min_length=1)
    layouts: list[Layout] = Field(min_length=1)
    patterns: list[str] = Field(default_factory=list, description="empty: any N:M")
    groups_per_cycle: float = Field(gt=0, le=65_536)
    latency_cycles: int = Field(ge=0, le=100_000)
    energy_pj_per_group: float = Field(ge=0, le=1e6)

    @field_validator("patterns")
    @classmethod
    def _patterns_are_n_m(cls, value: list[str]) -> list[str]:
        for text in value:
            _check_pattern(text)
        return value


class SparseConfig(_Strict):
    native: list[str] = Field(default_factory=lambda: ["dense"], min_length=1)
    select_mux: bool = True
    outlier_side_path: bool = False
    outlier_macs_per_cycle: float = Field(default=0.0, ge=0, le=1e6)
    decoders: list[DecoderConfig] = Field(default_factory=list)

    @field_validator("native")
    @classmethod
    def _native_formats(cls, value: list[str]) -> list[str]:
        for text in value:
            if text != "dense":
                _check_pattern(text)
        return value


class MappingConfig(_Strict):
    """How a GEMM is cut into folds (ws): tokens per fold.

    "auto": the most tokens whose partial sums (tokens x cols) fit in half the output
    buffer and, where possible, whose activations fit in half the input buffer;
    "all": every token through every fold, spilling partial sums (SCALE-Sim's mapping).
    """

    token_tile: Literal["auto", "all"] | int = "auto"

    @field_validator("token_tile")
    @classmethod
    def _positive(cls, value: str | int) -> str | int:
        if isinstance(value, int) and value < 1:
            raise ValueError("token_tile must be 'auto', 'all' or an integer >= 1")
        return value


class Arch(_Strict):
    name: str = Field(min_length=1)
    array: ArrayConfig
    buffers: Buffers
    dram: DramConfig
    sparse: SparseConfig = Field(default_factory=SparseConfig)
    mapping: MappingConfig = Field(default_factory=MappingConfig)
    energy_table: str = "energy_45nm"

    def executes(self, pattern: str) -> bool:
        return pattern in self.sparse.native

    def decoder_for(self, pattern: str, layout: str) -> DecoderConfig | None:
        for dec in self.sparse.decoders:
            if layout in dec.layouts and (not dec.patterns or pattern in dec.patterns):
                return dec
        return None

    def decoder_layout(self, pattern: str) -> str | None:
        """The first layout some decoder of this arch reads for `pattern`."""
        for dec in self.sparse.decoders:
            if not dec.patterns or pattern in dec.patterns:
                return dec.layouts[0]
        return None


def _check_pattern(text: str) -> None:
    match = _PATTERN.match(text)
    if not match or not (1 <= int(match.group(1)) < int(match.group(2)) <= 32):
        raise ValueError(f"{text!r} is not an N:M pattern with 1 <= N < M <= 32 (e.g. '8:16')")


def preset_names() -> list[str]:
    files = resources.files("nmlab.simulator").joinpath("configs").iterdir()
    return sorted(
        f.name[:-5] for f in files if f.name.endswith(".toml") and not f.name.startswith("energy")
    )


def config_path(name_or_path: str | Path) -> Path:
    """A path as given if it exists, else the preset of that name in configs/."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    stem = path.name[:-5] if path.name.endswith(".toml") else path.name
    candidate = Path(str(resources.files("nmlab.simulator").joinpath("configs", f"{stem}.toml")))
    if candidate.is_file():
        return candidate
    raise SimulatorError(
        f"architecture {str(name_or_path)!r}: no such file and no such preset "
        f"(presets: {', '.join(preset_names())})"
    )


def format_validation_error(source: str, err: ValidationError) -> str:
    """One readable line per problem: the dotted field, what is allowed, what was given."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "missing":
            parts.append(f"{loc}: required field is missing")
        elif e["type"] == "extra_forbidden":
            parts.append(f"{loc}: unknown field")
        else:
            parts.append(f"{loc}: {msg} (got {e.get('input')!r})")
    return f"{source}: " + "; ".join(parts)


def parse_arch(data: dict, source: str = "<arch>") -> Arch:
    try:
        return Arch.model_validate(data)
    except ValidationError as err:
        raise SimulatorError(format_validation_error(source, err)) from None


def load_arch(name_or_path: str | Path) -> Arch:
    """Load and validate an architecture TOML (a path or a preset name)."""
    path = config_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise SimulatorError(f"{path}: not valid TOML: {err}") from None
    arch = parse_arch(data, str(path))
    beside = path.parent / arch.energy_table
    if beside.is_file():  # an energy table path is relative to the arch file
        arch = arch.model_copy(update={"energy_table": str(beside.resolve())})
    return arch
