"""results.json -> Pareto fronts and report.md of `nmlab run` (every figure from the run)."""

from __future__ import annotations

from typing import Any


def pareto(points: list[tuple[float, float, str]]) -> list[str]:
    """Ids of the points no other point beats on both axes (lower x and lower y)."""
    front = []
    best_y = float("inf")
    for _x, y, ident in sorted(points, key=lambda p: (p[0], p[1])):
        if y < best_y:
            front.append(ident)
            best_y = y
    return front


def corpora(results: dict[str, Any]) -> list[str]:
    """The evaluation corpora, in the order of the first variant (wiki, shakespeare)."""
    out: list[str] = []
    for v in results["variants"]:
        out += [c for c in v["ppl"] if c not in out]
    return out


def sim_archs(results: dict[str, Any]) -> list[str]:
    return [a for a, info in results["archs"].items() if info["runs"]]


def decode_metric(v: dict[str, Any], arch: str, metric: str) -> float | None:
    sim = v["sim"].get(arch)
    return None if sim is None else sim["decode"]["per_token"][metric]


def pareto_fronts(results: dict[str, Any]) -> dict[str, Any]:
    """{"bits": {corpus: ids}, "decode_cycles"|"decode_energy": {arch: {corpus: ids}}}."""
    variants = results["variants"]
    out: dict[str, Any] = {"bits": {}, "decode_cycles": {}, "decode_energy": {}}
    for c in corpora(results):
        out["bits"][c] = pareto(
            [(v["bits_per_element"]["total"], v["ppl"][c], v["id"]) for v in variants]
        )
    for key, metric in (("decode_cycles", "cycles"), ("decode_energy", "energy_pj")):
        for a in sim_archs(results):
            out[key][a] = {
                c: pareto(
                    [
                        (decode_metric(v, a, metric), v["ppl"][c], v["id"])
                        for v in variants
                        if v["sim"].get(a)
                    ]
                )  # fmt: skip
                for c in corpora(results)
            }
    return out


def _label(results: dict[str, Any], ident: str) -> str:
    return next(v["label"] for v in results["variants"] if v["id"] == ident)


def summary_lines(results: dict[str, Any]) -> list[str]:
    """A few sentences on the Pareto fronts, generated from the numbers."""
    by_id = {v["id"]: v for v in results["variants"]}
    lines = []
    fronts = results["pareto"]
    for c in corpora(results):
        ids = fronts["bits"][c]
        pts = ", ".join(
            f"{_label(results, i)} ({by_id[i]['bits_per_element']['total']:.3f} b/e, "
            f"ppl {by_id[i]['ppl'][c]:.2f})"
            for i in ids
        )
        lines.append(f"- **{c}, perplexity vs bits/element**: the Pareto front is {pts}.")
        sparse = [v for v in results["variants"] if not v["dense"]]
        if sparse:
            best = min(sparse, key=lambda v: v["ppl"][c])
            dense = by_id.get("dense")
            ref = f" (dense: {dense['ppl'][c]:.2f})" if dense else ""
            lines.append(
                f"  Best pruned variant on {c}: {best['label']}, ppl {best['ppl'][c]:.2f}{ref} "
                f"at {best['bits_per_element']['total']:.3f} bits/element."
            )
    for a in sim_archs(results):
        for c in corpora(results):
            for key, metric, unit, scale, digits in (
                ("decode_energy", "energy_pj", "uJ", 1e6, 1),
                ("decode_cycles", "cycles", "cycles", 1, 0),
            ):
                pts = ", ".join(
                    f"{_label(results, i)} "
                    f"({decode_metric(by_id[i], a, metric) / scale:,.{digits}f} "
                    f"{unit}, ppl {by_id[i]['ppl'][c]:.2f})"
                    for i in fronts[key][a][c]
                )
                lines.append(f"- **{a}, {c}, perplexity vs {key.replace('_', ' ')}/token**: "
                             f"front {pts}.")  # fmt: skip
        dense = by_id.get("dense")
        ran = [v for v in results["variants"] if v["sim"].get(a) and not v["dense"]]
        if dense and dense["sim"].get(a) and ran:
            cheapest = min(ran, key=lambda v: decode_metric(v, a, "energy_pj"))
            d_e = decode_metric(dense, a, "energy_pj")
            d_c = decode_metric(dense, a, "cycles")
            e = decode_metric(cheapest, a, "energy_pj")
            cyc = decode_metric(cheapest, a, "cycles")
            lines.append(
                f"  On {a} the cheapest decode is {cheapest['label']}: {e / 1e6:,.1f} uJ and "
                f"{cyc:,.0f} cycles per token vs dense {d_e / 1e6:,.1f} uJ and {d_c:,.0f} cycles "
                f"({100 * (1 - e / d_e):.0f}% less energy, {d_c / cyc:.2f}x fewer cycles)."
            )
    return lines


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def render_markdown(results: dict[str, Any], plots: list[str]) -> str:
    s = results["settings"]
    cs = corpora(results)
    lines = [
        "# nmlab run",
        "",
        f"Command (every setting spelled out): `{results['command']}`",
        "",
        f"Model `{s['model']}` ({results['model']['path']}); patterns {', '.join(s['patterns'])}; "
        f"methods {', '.join(s['methods'])}; variants {', '.join(s['variants'])} "
        f"(outliers {s['outliers']}, VC = Variance Correction on the weights); "
        f"calibration {s['calib']} x {s['seqlen']} tokens (wiki), perplexity on up to "
        f"{s['eval_windows']} windows x {s['seqlen']} tokens per corpus; weights stored as "
        f"{s['dtype']}; simulated prefill {s['tokens']} tokens and decode 1 token"
        + (" (`--quick`)." if s["quick"] else "."),
        "",
        f"nmlab {results['nmlab_version']}, {results['timings']['total_s']:.0f} s in all; "
        f"{results['timings']['reused']} of {len(results['timings']['steps'])} steps reused "
        f"from the cache (computing every step took {results['timings']['computed_s']:.0f} s).",
        "",
        "## Accuracy and storage",
        "",
        "Bits per element are measured from the encoded containers' stream bytes (all linear "
        "layers of the decoder blocks, nmlab rank layout): values + N:M metadata + outlier "
        "values + outlier positions.",
        "",
    ]
    rows = []
    for v in results["variants"]:
        b = v["bits_per_element"]
        rows.append([v["label"]] + [f"{v['ppl'][c]:.2f}" for c in cs] + [
            f"{b.get('values', 0):.3f}", f"{b.get('meta', 0):.3f}",
            f"{b.get('outlier_values', 0) + b.get('outlier_positions', 0):.3f}",
            f"**{b['total']:.3f}**", f"{v.get('sparsity_total', 0):.3f}",
        ])  # fmt: skip
    head = ["variant", *[f"ppl {c}" for c in cs], "values b/e", "meta b/e", "outlier b/e",
            "total b/e", "sparsity"]  # fmt: skip
    lines += _table(head, rows)
    for a, info in results["archs"].items():
        lines += ["", f"## {a}", ""]
        if not info["runs"]:
            lines.append("Runs none of the variants: " + "; ".join(
                sorted({r for r in info["skipped"].values()})) + ".")  # fmt: skip
            continue
        rows = []
        for v in results["variants"]:
            sim = v["sim"].get(a)
            if sim is None:
                continue
            p, d = sim["prefill"]["per_token"], sim["decode"]["per_token"]
            rows.append([
                v["label"], sim["layout"], f"{sim['bits_per_element']:.3f}",
                f"{p['cycles']:,.0f}", f"{p['energy_pj'] / 1e6:,.1f}",
                f"{d['cycles']:,.0f}", f"{d['energy_pj'] / 1e6:,.1f}", f"{d['dram_bytes']:,.0f}",
            ])  # fmt: skip
        lines += _table(["variant", "layout", "b/e", "prefill cycles/token",
                         "prefill uJ/token", "decode cycles/token", "decode uJ/token",
                         "decode DRAM bytes/token"], rows)  # fmt: skip
        if info["skipped"]:
            labels = {v["id"]: v["label"] for v in results["variants"]}
            lines += ["", "Not run here: " + "; ".join(
                f"{labels[k]} ({r})" for k, r in info["skipped"].items()) + "."]  # fmt: skip
    lines += ["", "## Pareto fronts", ""] + summary_lines(results)
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    rt = results.get("formats", {}).get("round_trip", [])
    if rt:
        lines += ["", "## Codec round trip", "",
                  f"A {rt[0]['shape'][0]}x{rt[0]['shape'][1]} fp16 matrix through every "
                  "layout, decoded and compared bit for bit.", ""]  # fmt: skip
        lines += _table(["pattern", "layout", "outliers", "bit-exact", "total b/e"],
                        [[r["pattern"], r["layout"], r["outliers"] or "-",
                          "yes" if r["bit_exact"] else "NO",
                          f"{r['total_bits_per_element']:.3f}"] for r in rt])  # fmt: skip
    lines += ["", "## Steps", ""]
    lines += ["Seconds: this run's; for a reused step also the run that computed it.", ""]
    lines += _table(["step", "what", "reused", "seconds", "computed in (s)"],
                    [[t["step"], t["name"], "yes" if t["reused"] else "no",
                      f"{t['seconds']:.1f}",
                      "-" if t.get("computed_s") is None else f"{t['computed_s']:.1f}"]
                     for t in results["timings"]["steps"]])  # fmt: skip
    return "\n".join(lines) + "\n"
