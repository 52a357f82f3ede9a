# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Accuracy vs cost: which formats are worth building?
#
# Reads the `results.json` of an `nmlab run` (dense model + pruned variants: method x
# N:M pattern x {base, 16:256 outliers, outliers + Variance Correction}) and draws the
# trade-offs: perplexity against the measured bits per element of the encoded weights,
# and against the simulated decode cycles and energy per token on each accelerator.
# A variant is on the Pareto front when no other variant is both cheaper and more
# accurate.
#
# Where the results come from, first found wins: `$NMLAB_RESULTS`, `results/results.json`
# under the repository, `docs/run/results.json` (a committed SmolLM2-135M
# `nmlab run --quick`). With `NMLAB_NOTEBOOK_QUICK=1` and none of them, a miniature run on
# a tiny random model is made on the spot (its numbers say nothing about real models).

# %%
import json
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt

import nmlab
from nmlab.run_report import corpora, decode_metric, pareto, sim_archs

QUICK = os.environ.get("NMLAB_NOTEBOOK_QUICK") == "1"
REPO = Path(nmlab.__file__).resolve().parents[1]
candidates = [Path(os.environ["NMLAB_RESULTS"])] if os.environ.get("NMLAB_RESULTS") else []
candidates += [REPO / "results" / "results.json", REPO / "docs" / "run" / "results.json"]
source = next((p for p in candidates if p.is_file()), None)
if source is not None:
    results = json.loads(source.read_text())
elif QUICK:
    from nmlab.run_demo import tiny_run

    results = tiny_run(tempfile.mkdtemp(prefix="nmlab-tradeoffs-"))
    source = "a miniature run on a tiny random model (NMLAB_NOTEBOOK_QUICK, no results.json)"
else:
    raise SystemExit("no results.json: run `nmlab run` (or `nmlab run --quick`) first")

variants = results["variants"]
by_id = {v["id"]: v for v in variants}
CORPORA = corpora(results)
ARCHS = sim_archs(results)
print(f"results from {source}")
print(f"command: {results['command']}")
print(f"{len(variants)} variants, corpora {CORPORA}, simulated on {ARCHS}")

# %% [markdown]
# ## The variants
#
# Bits per element are measured from the encoded containers (fp16 values + N:M rank
# metadata + outlier values and positions), summed over every linear layer.

# %%
head = f"{'variant':<28}" + "".join(f"{'ppl ' + c:>16}" for c in CORPORA) + f"{'bits/el':>9}"
print(head)
for v in sorted(variants, key=lambda v: v["bits_per_element"]["total"]):
    ppl = "".join(f"{v['ppl'][c]:>16.2f}" for c in CORPORA)
    print(f"{v['label']:<28}{ppl}{v['bits_per_element']['total']:>9.3f}")


# %% [markdown]
# ## Perplexity vs storage, with the Pareto front


# %%
def draw(ax, pts, color="k", annotate=True):
    """Points (x, ppl, id), their Pareto front as a step line, labels."""
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=color, s=25)
    front = [p for p in sorted(pts) if p[2] in set(pareto(pts))]
    ax.plot([p[0] for p in front], [p[1] for p in front], "--", color=color, lw=1)
    if annotate:
        for x, y, ident in pts:
            ax.annotate(by_id[ident]["label"], (x, y), fontsize=6, xytext=(3, 2),
                        textcoords="offset points")  # fmt: skip
    return front


fig, axes = plt.subplots(1, len(CORPORA), figsize=(6 * len(CORPORA), 4.2), squeeze=False)
fronts_bits = {}
for ax, c in zip(axes[0], CORPORA, strict=True):
    pts = [(v["bits_per_element"]["total"], v["ppl"][c], v["id"]) for v in variants]
    fronts_bits[c] = draw(ax, pts)
    ax.set_xlabel("bits per element (measured)")
    ax.set_ylabel(f"perplexity, {c}")
    ax.set_title(f"{c}: accuracy vs storage")
    ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Perplexity vs decode cost per token, per accelerator

# %%
c0 = CORPORA[0]
if ARCHS:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, (metric, scale, unit) in zip(
        axes, (("cycles", 1.0, "cycles"), ("energy_pj", 1e6, "uJ")), strict=True
    ):
        for i, a in enumerate(ARCHS):
            pts = [(decode_metric(v, a, metric) / scale, v["ppl"][c0], v["id"])
                   for v in variants if v["sim"].get(a)]  # fmt: skip
            draw(ax, pts, color=f"C{i}", annotate=i == 0)
            ax.scatter([], [], color=f"C{i}", label=a)
        ax.set_xlabel(f"decode {unit} per token")
        ax.set_ylabel(f"perplexity, {c0}")
        ax.set_title(f"decode {unit}/token vs perplexity ({c0}); dashed: Pareto front")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    plt.tight_layout()
    plt.show()


# %% [markdown]
# ## What the numbers say
#
# Printed from the data above, so it stays true for whichever results.json was read.


# %%
def ppl_of(method, pattern, kind, c):
    v = next((v for v in variants if v["method"] == method and v["pattern"] == pattern
              and v["kind"] == kind), None)  # fmt: skip
    return None if v is None else (v["ppl"][c], v["bits_per_element"]["total"])


for c in CORPORA:
    names = ", ".join(by_id[i]["label"] for _, _, i in fronts_bits[c])
    print(f"{c}: on the storage Pareto front: {names}")
methods = sorted({v["method"] for v in variants if not v["dense"]})
kinds = sorted({v["kind"] for v in variants if not v["dense"]})
for c in CORPORA:
    for m in methods:
        for k in kinds:
            a, b = ppl_of(m, "2:4", k, c), ppl_of(m, "8:16", k, c)
            if a and b:
                print(f"{c}, {m} {k}: 8:16 ppl {b[0]:.2f} at {b[1]:.3f} b/e vs 2:4 {a[0]:.2f} "
                      f"at {a[1]:.3f} b/e -> 8:16 is {'better' if b[0] < a[0] else 'worse'} "
                      f"for {b[1] - a[1]:+.3f} bits/element")  # fmt: skip
        for p in sorted({v["pattern"] for v in variants if not v["dense"]}):
            base, out = ppl_of(m, p, "base", c), ppl_of(m, p, "outliers", c)
            vc = ppl_of(m, p, "outliers+vc", c)
            if out and vc:
                print(f"{c}, {m} {p}: Variance Correction on top of outliers changes ppl "
                      f"{out[0]:.2f} -> {vc[0]:.2f} (no extra bits)")  # fmt: skip
            if base and out:
                print(f"{c}, {m} {p}: outliers change ppl {base[0]:.2f} -> {out[0]:.2f} "
                      f"for {out[1] - base[1]:+.3f} bits/element")  # fmt: skip
dense = by_id.get("dense")
for a in ARCHS:
    ran = [v for v in variants if v["sim"].get(a) and not v["dense"]]
    if dense and dense["sim"].get(a) and ran:
        best = min(ran, key=lambda v: v["ppl"][c0])
        e_d, e_b = decode_metric(dense, a, "energy_pj"), decode_metric(best, a, "energy_pj")
        c_d, c_b = decode_metric(dense, a, "cycles"), decode_metric(best, a, "cycles")
        print(f"{a}: most accurate pruned variant it runs is {best['label']} "
              f"(ppl {best['ppl'][c0]:.2f} vs dense {dense['ppl'][c0]:.2f}); decode costs "
              f"{e_b / 1e6:,.1f} uJ and {c_b:,.0f} cycles per token vs dense {e_d / 1e6:,.1f} uJ "
              f"and {c_d:,.0f} cycles ({100 * (1 - e_b / e_d):.0f}% less energy)")  # fmt: skip
for a, info in results["archs"].items():
    if not info["runs"]:
        print(f"{a}: runs none of the variants ({sorted(set(info['skipped'].values()))[0]})")
