"""Shared helpers for the simulator tests."""

from __future__ import annotations

from nmlab.simulator.arch import Arch, load_arch
from nmlab.simulator.simulate import simulate
from nmlab.simulator.workload import Workload, synthetic_encoded


def with_changes(arch: Arch, **sections: dict) -> Arch:
    """A copy of `arch` with some fields of some sections replaced (validated again)."""

    def merge(into: dict, new: dict) -> None:
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value

    data = arch.model_dump()
    merge(data, sections)
    return Arch.model_validate(data)


def run(arch: Arch | str, m: int, n: int, k: int, pattern="dense", layout="rank", dtype=None):
    a = load_arch(arch) if isinstance(arch, str) else arch
    lay = "dense" if pattern == "dense" else layout
    enc = synthetic_encoded(n, k, pattern, lay, dtype or a.array.mac_dtypes[0])
    return simulate(a, Workload.from_encoded(enc, m))
