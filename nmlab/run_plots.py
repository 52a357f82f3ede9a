"""The PNG plots of `nmlab run` (matplotlib Figure + Agg canvas): trade-offs with Pareto
fronts, per-layer costs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .run_report import corpora, decode_metric, pareto, sim_archs

KINDS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _figure(rows: int, cols: int, figsize: tuple[float, float]) -> tuple[Any, Any]:
    """A Figure with its own Agg canvas: no pyplot, so a caller's backend is left alone."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(rows, cols, squeeze=False)


def _yscale(ax: Any, ys: list[float]) -> None:
    """Log scale when perplexities span a decade, with plain numbers on the ticks."""
    from matplotlib.ticker import ScalarFormatter

    if ys and min(ys) > 0 and max(ys) / min(ys) > 10:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())


def _front_line(ax: Any, pts: list[tuple[float, float, str]], **kw: Any) -> None:
    ids = set(pareto(pts))
    front = sorted((x, y) for x, y, i in pts if i in ids)
    if front:
        ax.plot([p[0] for p in front], [p[1] for p in front], **kw)


def plot_bits(results: dict[str, Any], path: Path) -> None:
    cs = corpora(results)
    fig, axes = _figure(1, len(cs), (6 * len(cs), 4.5))
    for ax, c in zip(axes[0], cs, strict=True):
        pts = [(v["bits_per_element"]["total"], v["ppl"][c], v["id"]) for v in results["variants"]]
        for v in results["variants"]:
            x, y = v["bits_per_element"]["total"], v["ppl"][c]
            ax.scatter(x, y, marker="*" if v["dense"] else "o", s=60)
            ax.annotate(v["label"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        _front_line(ax, pts, color="k", ls="--", lw=1, label="Pareto front")
        _yscale(ax, [p[1] for p in pts])
        ax.set_xlabel("total bits per element (measured, values + metadata + outliers)")
        ax.set_ylabel(f"perplexity ({c})")
        ax.set_title(f"{c}: perplexity vs storage")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_decode(results: dict[str, Any], path: Path, metric: str) -> None:
    """Perplexity vs decode cost per token, one series and one Pareto front per arch."""
    cs, archs = corpora(results), sim_archs(results)
    scale, unit = (1e6, "uJ") if metric == "energy_pj" else (1.0, "cycles")
    fig, axes = _figure(1, len(cs), (6 * len(cs), 4.5))
    for ax, c in zip(axes[0], cs, strict=True):
        labelled: set[str] = set()
        for i, a in enumerate(archs):
            color = f"C{i}"
            pts = [(decode_metric(v, a, metric) / scale, v["ppl"][c], v["id"])
                   for v in results["variants"] if v["sim"].get(a)]  # fmt: skip
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=color, label=a)
            for x, y, ident in pts:
                if ident in labelled:  # the same variant on another arch: one label is enough
                    continue
                labelled.add(ident)
                label = next(v["label"] for v in results["variants"] if v["id"] == ident)
                ax.annotate(label, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
            _front_line(ax, pts, color=color, ls="--", lw=1)
        _yscale(ax, [v["ppl"][c] for v in results["variants"]])
        ax.set_xlabel(f"decode {unit} per token (all linear layers)")
        ax.set_ylabel(f"perplexity ({c})")
        ax.set_title(f"{c}: perplexity vs decode {unit}/token (dashed: Pareto front)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_layers(results: dict[str, Any], path: Path) -> None:
    """Stacked bars: decode energy per token by layer kind, per variant, one panel per arch."""
    archs = sim_archs(results)
    fig, axes = _figure(len(archs), 1, (11, 3.8 * len(archs)))
    for ax, a in zip(axes[:, 0], archs, strict=True):
        ran = [v for v in results["variants"] if v["sim"].get(a)]
        kinds = list(KINDS) + sorted(
            {k for v in ran for k in v["sim"][a]["decode"]["by_kind"]} - set(KINDS)
        )
        bottom = [0.0] * len(ran)
        for j, kind in enumerate(kinds):
            vals = [v["sim"][a]["decode"]["by_kind"].get(kind, {}).get("energy_pj", 0.0) / 1e6
                    for v in ran]  # fmt: skip
            if not any(vals):
                continue
            ax.bar(range(len(ran)), vals, bottom=bottom, label=kind, color=f"C{j}")
            bottom = [b + x for b, x in zip(bottom, vals, strict=True)]
        ax.set_xticks(range(len(ran)), [v["label"] for v in ran], rotation=30, ha="right",
                      fontsize=7)  # fmt: skip
        ax.set_ylabel("decode energy, uJ/token")
        ax.set_title(f"{a}: decode energy per token by layer kind")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def make_plots(results: dict[str, Any], out: Path) -> list[str]:
    """Write the PNGs into OUT; returns their file names."""
    names = ["ppl_vs_bits.png"]
    plot_bits(results, out / names[0])
    if sim_archs(results):
        plot_decode(results, out / "ppl_vs_decode_cycles.png", "cycles")
        plot_decode(results, out / "ppl_vs_decode_energy.png", "energy_pj")
        plot_layers(results, out / "layer_breakdown.png")
        names += ["ppl_vs_decode_cycles.png", "ppl_vs_decode_energy.png", "layer_breakdown.png"]
    return names
