"""The simulation report: one JSON-ready dict plus a readable table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field


@dataclass
class Report:
    arch: str
    workload: dict
    cycles: int  # everything: first fetch to last write-back
    array_cycles: int  # first to last fold: compute + stalls (SCALE-Sim's "Total Cycles")
    prologue_cycles: int
    epilogue_cycles: int
    compute_cycles: int
    stall_cycles: dict[str, int]
    utilisation: float  # useful MACs / (PEs x cycles)
    folds: int
    time_us: float
    traffic_bytes: dict[str, dict[str, int]]
    energy_pj: dict[str, float]
    energy_table: str = ""  # the table the energies came from (values with their sources)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def add(reports: list[Report], arch: str, workload: dict) -> Report:
    """Sum of several layers run one after the other."""

    def total(get: Callable[[Report], int]) -> int:
        return sum(get(r) for r in reports)

    def merge(dicts: list[dict]) -> dict:
        out: dict = {}
        for d in dicts:
            for k, v in d.items():
                out[k] = merge([out.get(k, {}), v]) if isinstance(v, dict) else out.get(k, 0) + v
        return out

    cycles = total(lambda r: r.cycles)
    macs = sum(r.utilisation * r.cycles for r in reports)
    return Report(
        arch=arch,
        workload=workload,
        cycles=cycles,
        array_cycles=total(lambda r: r.array_cycles),
        prologue_cycles=total(lambda r: r.prologue_cycles),
        epilogue_cycles=total(lambda r: r.epilogue_cycles),
        compute_cycles=total(lambda r: r.compute_cycles),
        stall_cycles=merge([r.stall_cycles for r in reports]),
        utilisation=macs / cycles if cycles else 0.0,
        folds=total(lambda r: r.folds),
        time_us=sum(r.time_us for r in reports),
        traffic_bytes=merge([r.traffic_bytes for r in reports]),
        energy_pj=merge([r.energy_pj for r in reports]),
        energy_table=reports[0].energy_table if reports else "",
    )


def render(report: Report, title: str | None = None) -> str:
    """A plain-text table (rich) of one report."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title or f"{report.arch}: {report.workload}", show_header=False)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("cycles (total)", f"{report.cycles:,}")
    table.add_row(
        "  prologue / epilogue", f"{report.prologue_cycles:,} / {report.epilogue_cycles:,}"
    )
    table.add_row("  compute", f"{report.compute_cycles:,}")
    for cause, v in report.stall_cycles.items():
        table.add_row(f"  stall: {cause}", f"{v:,}")
    table.add_row("utilisation", f"{100 * report.utilisation:.1f} %")
    table.add_row("time", f"{report.time_us:,.2f} us")
    for level, d in report.traffic_bytes.items():
        for k, v in d.items():
            table.add_row(f"{level} bytes: {k}", f"{v:,}")
    for k, v in report.energy_pj.items():
        table.add_row(f"energy: {k}", f"{v / 1e6:,.3f} uJ")
    console = Console(width=100, record=True, file=None, force_terminal=False)
    with console.capture() as cap:
        console.print(table)
    return cap.get()
