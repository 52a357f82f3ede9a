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
# # Design-space sweep: array size x pattern x decoder throughput
#
# Cycles and energy per token for SmolLM2-135M's linear layers (30 blocks x 7
# layers) on variants of the `rank-8of16` preset, from the simulator. The same
# spec format drives `nmlab sweep SPEC.toml` on a Dask cluster; here the points
# run in this process so the notebook needs no cluster. Weight streams come from
# the real codec (synthetic weights that satisfy each pattern).
#
# `NMLAB_NOTEBOOK_QUICK=1` shrinks the grid for CI.

# %%
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt

from nmlab.sweep import build_workloads, evaluate, load_spec, points

QUICK = os.environ.get("NMLAB_NOTEBOOK_QUICK") == "1"
sizes = [16, 32] if QUICK else [8, 16, 32, 64, 128]
decoder_rates = [1, 4] if QUICK else [1, 2, 4, 8]
spec_text = f"""
[sweep]
arch = "rank-8of16"
layers = "smollm2"
tokens = [1, 2048]
formats = ["dense", "2:4/rank", "2:4/positional", "8:16/rank"]

[sweep.axes]
"array.rows" = {sizes}
"array.cols" = {sizes}
"sparse.decoders.0.groups_per_cycle" = {decoder_rates}
"""
spec_path = Path(tempfile.mkdtemp()) / "sweep.toml"
spec_path.write_text(spec_text)
spec = load_spec(spec_path)
workloads = build_workloads(spec)
rows = [evaluate(p, spec, workloads) for p in points(spec)]
square = [r for r in rows if r["array.rows"] == r["array.cols"] and "error" not in r]
print(f"{len(rows)} points, {len(square)} with square arrays")

# %% [markdown]
# ## Decode (one token): memory-bound, so metadata bits decide
#
# At one token every weight byte is read once per token, so the stored bits
# per weight (values + metadata) and the decoder's groups per cycle decide.
# 2:4 has four groups per 16 elements where 8:16 has one: watch how each
# reacts to a slow rank decoder. The table below prints the 32x32 figures.

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=False)
for ax, tokens in zip(axes, (1, 2048), strict=True):
    for (pattern, layout), style in zip(spec.formats, ("-", "--", ":", "-."), strict=True):
        for rate in decoder_rates:
            series = sorted(
                (r for r in square if r["tokens"] == tokens and r["pattern"] == pattern
                 and r["layout"] == layout and r["sparse.decoders.0.groups_per_cycle"] == rate),
                key=lambda r: r["array.rows"],
            )  # fmt: skip
            if not series or (pattern == "dense" and rate != decoder_rates[-1]):
                continue
            label = f"{pattern} {layout}" + ("" if pattern == "dense" else f", {rate} groups/cycle")
            ax.plot([r["array.rows"] for r in series], [r["cycles_per_token"] for r in series],
                    style, marker="o", label=label)  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("array rows = cols")
    ax.set_ylabel("cycles per token")
    ax.set_title("decode (1 token)" if tokens == 1 else f"prefill ({tokens} tokens)")
    ax.grid(alpha=0.3)
axes[1].legend(fontsize=7)
plt.tight_layout()
plt.show()

# %%
for rate in decoder_rates:
    for r in sorted(
        (r for r in square if r["array.rows"] == 32 and r["tokens"] == 1
         and r["sparse.decoders.0.groups_per_cycle"] == rate),
        key=lambda r: r["cycles_per_token"],
    ):  # fmt: skip
        cycles, dram = r["cycles_per_token"], r["dram_bytes"]
        print(f"rank decoder {rate} groups/cycle  {r['pattern']:>5} {r['layout']:<10} "
              f"{cycles:>12,.0f} cycles/token  {dram:>12,} DRAM bytes")  # fmt: skip

# %% [markdown]
# ## Energy per token, by format, on the 32x32 array

# %%
pick = [r for r in square if r["array.rows"] == 32 and r["sparse.decoders.0.groups_per_cycle"]
        == decoder_rates[-1]]  # fmt: skip
fig, ax = plt.subplots(figsize=(8, 4))
labels = [f"{r['pattern']} {r['layout']}\n{r['tokens']} tok" for r in pick]
ax.bar(range(len(pick)), [r["energy_uj_per_token"] for r in pick], color="tab:green")
ax.set_xticks(range(len(pick)), labels, fontsize=8)
ax.set_yscale("log")
ax.set_ylabel("energy per token (uJ)")
ax.set_title("SmolLM2-135M linear layers on a 32x32 array")
ax.grid(alpha=0.3, axis="y")
plt.tight_layout()
plt.show()
