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
# # Format cost explorer
#
# What does each way of storing N:M positions cost, in bits per element, and
# how fast does our decoder turn it back into a dense matrix? Every number
# below comes from encoding real arrays in this run: the sizes are the bytes
# of the actual streams, not a formula (the formula is drawn beside them).
#
# Set `NMLAB_NOTEBOOK_QUICK=1` for the small settings CI uses.

# %%
import os
import time

import matplotlib.pyplot as plt
import numpy as np

from nmlab.formats import decode, encode
from nmlab.formats.table import format_cost
from nmlab.run import keep_largest as prune  # n largest magnitudes of each group of m

QUICK = os.environ.get("NMLAB_NOTEBOOK_QUICK") == "1"
ROWS, COLS = (64, 1024) if QUICK else (1024, 4096)
rng = np.random.default_rng(0)


weight = rng.standard_normal((ROWS, COLS)).astype(np.float16)

# %% [markdown]
# ## Metadata bits per element, measured from encoded streams
#
# Half-density patterns N = M/2 for M = 2 ... 32, each encoded with every
# layout; the entropy bound log2 C(M, N) / M is the floor no layout can beat.

# %%
layouts = ["rank", "joint", "positional", "bitmask"]
ms = [2, 4, 8, 16, 32]
measured = {layout: [] for layout in layouts}
entropy = []
for m in ms:
    n = m // 2
    sparse = prune(weight, n, m)
    for layout in layouts:
        enc = encode(sparse, f"{n}:{m}", layout=layout)
        assert np.array_equal(decode(enc).view(np.uint16), sparse.view(np.uint16))
        measured[layout].append(enc.bits_per_element()["meta"])
    entropy.append(format_cost(f"{n}:{m}").entropy_bits_per_element)

nvidia = encode(prune(weight[:32] if QUICK else weight, 2, 4), "2:4", layout="cutlass")
fig, ax = plt.subplots(figsize=(7, 4))
for layout in layouts:
    ax.plot(ms, measured[layout], marker="o", label=layout)
ax.plot(ms, entropy, "k--", label="entropy bound")
ax.scatter([4], [nvidia.bits_per_element()["meta"]], marker="*", s=150, c="tab:red",
           label="NVIDIA 2:4 (CUTLASS)", zorder=5)  # fmt: skip
ax.set_xscale("log", base=2)
ax.set_xticks(ms, [f"{m // 2}:{m}" for m in ms])
ax.set_xlabel("pattern (50% density)")
ax.set_ylabel("metadata bits per element")
ax.set_title("Position metadata cost, measured from encoded streams")
ax.legend()
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ## K:256 outliers: rank versus 8-bit indices
#
# The outlier side stream for K = 1 ... 64 per 256-element block, on rows of
# 576 elements (SmolLM2's hidden size: two full blocks and a 64-element tail).

# %%
ks = [1, 2, 4, 8, 16, 32, 64]
row = rng.standard_normal((ROWS // 4, 576)).astype(np.float16)
rank_bits, index_bits, outlier_entropy = [], [], []
for k in ks:
    outliers = np.zeros(row.shape, bool)
    for start, length in ((0, 256), (256, 256), (512, 64)):
        slots = min(length, -(-k * length // 256))
        top = np.argsort(-np.abs(row[:, start : start + length]), axis=1)[:, :slots]
        np.put_along_axis(outliers[:, start : start + length], top, True, axis=1)
    mixed = np.where(outliers, row, prune(np.where(outliers, 0, row), 1, 16))
    for layout, store in (("rank", rank_bits), ("index", index_bits)):
        enc = encode(
            mixed, "1:16", outliers=f"{k}:256", outlier_layout=layout, outlier_mask=outliers
        )
        assert np.array_equal(decode(enc).view(np.uint16), mixed.view(np.uint16))
        store.append(enc.bits_per_element()["outlier_positions"])
    outlier_entropy.append(format_cost(f"{k}:256").entropy_bits_per_element)

fig, ax = plt.subplots(figsize=(7, 4))
ax.plot(ks, rank_bits, marker="o", label="rank (combinadic)")
ax.plot(ks, index_bits, marker="s", label="8-bit indices")
ax.plot(ks, outlier_entropy, "k--", label="entropy bound (full blocks)")
ax.set_xscale("log", base=2)
ax.set_xticks(ks, [f"{k}:256" for k in ks])
ax.set_ylabel("outlier position bits per element")
ax.set_title("Outlier position metadata, 576-wide rows (tail block included)")
ax.legend()
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ## Decoder work: measured decode throughput per layout
#
# A proxy for decoder cost in software: dense output bytes per second of our
# Numba decoder (one core, best of 3). The simulator prices hardware decoders
# separately; this shows which layouts are cheap to unpack sequentially.

# %%
throughput = {}
for pattern in ("2:4", "8:16"):
    n, m = (int(x) for x in pattern.split(":"))
    sparse = prune(weight, n, m)
    for layout in ("rank", "joint", "positional", "bitmask") + (("cutlass",) if m == 4 else ()):
        if layout == "cutlass" and (ROWS % 32 or COLS % 32):
            continue
        enc = encode(sparse, pattern, layout=layout)
        decode(enc)  # compile
        seconds = []
        for _ in range(3):
            start = time.perf_counter()
            decode(enc)
            seconds.append(time.perf_counter() - start)
        best = min(seconds)
        throughput[f"{pattern} {layout}"] = sparse.nbytes / best / 1e9

fig, ax = plt.subplots(figsize=(7, 4))
names = list(throughput)
ax.barh(names, [throughput[k] for k in names], color="tab:blue")
ax.set_xlabel("decode throughput, GB/s of dense fp16 output")
ax.set_title(f"Decoding a {ROWS}x{COLS} matrix")
ax.grid(alpha=0.3, axis="x")
plt.show()
