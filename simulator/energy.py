"""The energy table (values with sources, from configs/energy_45nm.toml) and the energy stage."""

from __future__ import annotations

import functools
import math
import tomllib
from dataclasses import dataclass, field

from .arch import Arch, DecoderConfig, config_path
from .errors import SimulatorError


@dataclass(frozen=True)
class EnergyTable:
    """pJ figures keyed by primitive; `sources` gives where each came from."""

    mac_pj: dict[str, float]
    sram_points: tuple[tuple[float, float], ...]  # (size KiB, pJ per 64-bit access), sorted
    dram_pj_per_bit: float
    select_mux_pj_per_bit: float
    outlier_pj_per_mac: float
    sources: dict[str, str] = field(default_factory=dict)

    def sram_pj_per_64bit(self, size_kib: float) -> float:
        """Log-size interpolation between the table's SRAM points, clamped at both ends."""
        pts = self.sram_points
        if size_kib <= pts[0][0]:
            return pts[0][1]
        for (s0, e0), (s1, e1) in zip(pts, pts[1:], strict=False):
            if size_kib <= s1:
                t = (math.log(size_kib) - math.log(s0)) / (math.log(s1) - math.log(s0))
                return e0 + t * (e1 - e0)
        return pts[-1][1]


@functools.lru_cache(maxsize=16)
def load_energy_table(name_or_path: str = "energy_45nm") -> EnergyTable:
    path = config_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
        sources: dict[str, str] = {}
        for section, entries in data.items():
            for key, entry in entries.items():
                sources[f"{section}.{key}"] = str(entry["source"])
        return EnergyTable(
            mac_pj={k: float(v["value"]) for k, v in data["mac_pj"].items()},
            sram_points=tuple(
                sorted((float(k), float(v["value"])) for k, v in data["sram_pj_per_64bit"].items())
            ),
            dram_pj_per_bit=float(data["dram"]["pj_per_bit"]["value"]),
            select_mux_pj_per_bit=float(data["select_mux"]["pj_per_select_bit"]["value"]),
            outlier_pj_per_mac=float(data["outlier"]["pj_per_mac"]["value"]),
            sources=sources,
        )
    except (KeyError, TypeError, ValueError, tomllib.TOMLDecodeError) as err:
        raise SimulatorError(f"energy table {path}: malformed ({err!r})") from None


@dataclass(frozen=True)
class EnergyCounts:
    """Event counts the time/traffic stages produce; energy is counts x table."""

    macs: int  # useful MACs on the main array (kept weights x tokens)
    select_bits: int  # activation-select bits switched (MACs x log2 M), 0 for dense
    decoded_groups: int
    outlier_macs: int
    sram_bytes: dict[str, int]  # per buffer (weights, inputs, outputs): reads + writes
    dram_bytes: int


def price(
    arch: Arch,
    table: EnergyTable,
    counts: EnergyCounts,
    dtype: str,
    decoder: DecoderConfig | None,
) -> dict[str, float]:
    """Energy per component in pJ. Static/leakage energy is not modelled."""
    if dtype not in table.mac_pj:
        raise SimulatorError(f"energy table has no MAC energy for dtype {dtype!r}")
    dec_pj = counts.decoded_groups * decoder.energy_pj_per_group if decoder else 0.0
    out: dict[str, float] = {
        "mac": counts.macs * table.mac_pj[dtype],
        "select_mux": counts.select_bits * table.select_mux_pj_per_bit,
        "decoder": dec_pj,
        "outlier_path": counts.outlier_macs * table.outlier_pj_per_mac,
    }
    for name, nbytes in counts.sram_bytes.items():
        buf = getattr(arch.buffers, name)
        e64 = buf.energy_pj_per_64bit or table.sram_pj_per_64bit(buf.size_kib)
        out[f"sram_{name}"] = nbytes / 8 * e64
    e_bit = arch.dram.energy_pj_per_bit or table.dram_pj_per_bit
    out["dram"] = counts.dram_bytes * 8 * e_bit
    out["total"] = sum(out.values())
    return out
