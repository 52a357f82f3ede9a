"""The computing steps of `nmlab run`; each fills one cache folder (see run_cache).

dense:     perplexity of the unpruned model + its linear weights as a dense fp16 container
prune:     prune_model -> perplexity -> encode the linear weights (fp16, rank layout) ->
           delete the pruned model folder (only metrics.json and the container stay)
transcode: the same weights in another metadata layout (the one an arch's decoder reads)
simulate:  every linear layer on one arch, prefill (`tokens` tokens) and decode (1 token)
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

from .run_plan import CANONICAL_LAYOUT, Variant, layout_arch

CONTAINER = "weights.safetensors"


def layer_kind(name: str) -> str:
    """model.layers.3.self_attn.q_proj.weight -> q_proj (the last module name)."""
    parts = [p for p in name.split(".") if p != "weight"]
    return parts[-1] if parts else name


def layer_index(name: str) -> int:
    match = re.search(r"\.layers\.(\d+)\.", name)
    return int(match.group(1)) if match else -1


def container_summary(path: Path) -> dict[str, Any]:
    """Bits per element measured from the stored streams of a container (all tensors)."""
    from nmlab.formats import load, stream_totals

    tensors = load(path)
    elements, streams = stream_totals(tensors.values())
    bits = {k: 8 * v / elements for k, v in streams.items()}
    bits["total"] = sum(bits.values())
    return {
        "tensors": len(tensors),
        "elements": elements,
        "stream_bytes": streams,
        "bits_per_element": bits,
        "file_bytes": path.stat().st_size,
    }


def set_threads() -> None:
    """``NMLAB_THREADS`` sets torch's thread count, as in `nmlab prune`."""
    import os

    import torch

    if os.environ.get("NMLAB_THREADS"):
        torch.set_num_threads(int(os.environ["NMLAB_THREADS"]))


def run_dense(folder: Path, model_path: Path, seqlen: int, windows: int, progress: bool) -> dict:
    """Evaluate the dense model and store its block linears as one dense fp16 container."""
    import numpy as np

    from nmlab.formats import encode, save
    from nmlab.pruning.models import load_model
    from nmlab.pruning.pipeline import evaluate
    from nmlab.pruning.sequential import block_linears

    set_threads()
    model, tokenizer = load_model(model_path, progress=progress)
    t0 = time.perf_counter()
    ppl, used = evaluate(model, tokenizer, seqlen, windows, progress=progress)
    eval_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tensors = {
        f"{name}.weight": encode(
            lin.weight.detach().numpy().astype(np.float16), None, layout="dense"
        )
        for name, lin in block_linears(model).items()
    }
    save(folder / CONTAINER, tensors, extra={"variant": "dense"})
    metrics = {
        "method": "dense",
        "ppl": ppl,
        "eval_windows": used,
        "eval_seqlen": seqlen,
        "sparsity_total": 0.0,
        "time_s": {"prune": 0.0, "eval": round(eval_s, 2),
                   "encode": round(time.perf_counter() - t0, 2)},
    }  # fmt: skip
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return {"ppl": ppl}


def run_prune(
    folder: Path,
    work: Path,
    model_path: Path,
    variant: Variant,
    calib: int,
    seqlen: int,
    windows: int,
    seed: int,
    dtype: str,
    progress: bool,
) -> dict:
    """Prune + evaluate into work/model (resumable), encode, keep metrics + container only."""
    from nmlab.formats import save
    from nmlab.pruning.pipeline import prune_model
    from nmlab.simulator.model import encode_pruned_dir

    model_dir = work / "model"
    if not (model_dir / "metrics.json").is_file():  # else a killed run got this far already
        prune_model(str(model_path), variant.method, variant.pattern, model_dir, calib=calib,
                    seqlen=seqlen, eval_windows=windows, seed=seed, progress=progress,
                    outliers=variant.outliers, vc=variant.vc)  # fmt: skip
    metrics = json.loads((model_dir / "metrics.json").read_text())
    t0 = time.perf_counter()
    arch = layout_arch(variant.pattern, CANONICAL_LAYOUT)
    tensors = encode_pruned_dir(model_dir, arch, dtype, variant.pattern)
    save(folder / CONTAINER, tensors, extra={"variant": variant.id, "layout": CANONICAL_LAYOUT})
    metrics.setdefault("time_s", {})["encode"] = round(time.perf_counter() - t0, 2)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=1))
    shutil.rmtree(work, ignore_errors=True)  # the full fp32 pruned model is not kept
    return {"ppl": metrics["ppl"]}


def run_transcode(folder: Path, source: Path, variant: Variant, layout: str) -> dict:
    """Re-encode a container's weights with another metadata layout (bit-exact values)."""
    from nmlab.formats import decode, encode, load, save

    out = {}
    for name, enc in load(source).items():
        w = decode(enc)
        out[name] = encode(w, variant.pattern, layout=layout, outliers=variant.outliers)
    save(folder / CONTAINER, out, extra={"variant": variant.id, "layout": layout})
    return {"layout": layout}


def _compact(report: Any) -> dict[str, Any]:
    return {
        "cycles": report.cycles,
        "energy_pj": report.energy_pj["total"],
        "dram_bytes": report.traffic_bytes["dram"]["total"],
    }


def run_simulate(folder: Path, container: Path, arch: Any, tokens: int) -> dict:
    """Per-layer and total cycles, energy and traffic of every linear, prefill and decode."""
    from nmlab.formats import load
    from nmlab.simulator.model import simulate_model

    result = simulate_model(arch, load(container), tokens)
    doc: dict[str, Any] = {"arch": arch.name, "tokens": tokens}
    for phase, r in result.items():
        total = r["total"].to_dict()
        total.pop("energy_table", None)
        t = total["workload"]["tokens"]
        by_kind: dict[str, dict[str, float]] = {}
        layers = []
        for rep in r["layers"]:
            name = rep.workload["name"]
            row = _compact(rep)
            layers.append({"name": name, "kind": layer_kind(name), "block": layer_index(name),
                           **row})  # fmt: skip
            agg = by_kind.setdefault(layer_kind(name), {"cycles": 0, "energy_pj": 0.0,
                                                         "dram_bytes": 0})  # fmt: skip
            for k, v in row.items():
                agg[k] += v
        doc[phase] = {
            "tokens": t,
            "total": total,
            "per_token": {
                "cycles": total["cycles"] / t,
                "energy_pj": total["energy_pj"]["total"] / t,
                "dram_bytes": total["traffic_bytes"]["dram"]["total"] / t,
            },
            "by_kind": by_kind,
            "layers": layers,
        }
    (folder / "sim.json").write_text(json.dumps(doc))
    return {"decode_cycles": doc["decode"]["total"]["cycles"]}
