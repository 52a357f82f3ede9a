"""`nmlab run`, the main job, end to end on a tiny random Llama and synthetic corpora:
results.json, report.md and plots; bits/element from the container bytes; the step
cache (a rerun reuses everything, a changed setting recomputes only what it affects);
bad options fail before any work."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nmlab.cli import app
from nmlab.pruning import data, pipeline
from tests.pruning.conftest import _docs, make_tiny_model

TINY = ["--patterns", "2:4,8:16", "--methods", "wanda", "--variants", "base,outliers",
        "--calib", "1", "--seqlen", "32", "--eval-windows", "1", "--tokens", "64",
        "--size", "256", "--arch", "rank-8of16", "--arch", "stc-2of4", "-q"]  # fmt: skip
VARIANTS = {"dense", "wanda-2of4-base", "wanda-2of4-outliers", "wanda-8of16-base",
            "wanda-8of16-outliers"}  # fmt: skip


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A tiny model, synthetic corpora, and one finished run in OUT."""
    root = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NMLAB_CACHE", str(root / "nmcache"))
        mp.setitem(data.CORPORA, "wiki", lambda: _docs(1))
        mp.setitem(data.CORPORA, "shakespeare", lambda: _docs(2))
        model = make_tiny_model(root / "model")
        out = root / "out"
        result = invoke(model, out)
        assert result.exit_code == 0, result.output
        yield {"model": model, "out": out}


def invoke(model: Path, out: Path, *extra: str) -> object:
    return CliRunner().invoke(app, ["run", "--model", str(model), *TINY, "-o", str(out), *extra])


def load(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def stable(results: dict) -> dict:
    """results.json without the wall-clock parts."""
    doc = {k: v for k, v in results.items() if k not in ("timings",)}
    doc["formats"] = {"round_trip": [{k: v for k, v in r.items() if not k.endswith("_s")}
                                     for r in results["formats"]["round_trip"]]}  # fmt: skip
    doc["variants"] = [{k: v for k, v in x.items() if k != "time_s"} for x in results["variants"]]
    return doc


def container_bits(path: Path) -> float:
    """Total bits/element of a container, computed straight from its safetensors bytes."""
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        header = json.loads(f.metadata()["nmlab"])
        stored = sum(f.get_tensor(k).nbytes for k in f.keys())  # noqa: SIM118
    elements = sum(t["shape"][0] * t["shape"][1] for t in header["tensors"].values())
    return 8 * stored / elements


def test_results_have_every_variant_with_measured_bits(env: dict) -> None:
    out = env["out"]
    results = load(out)
    assert {v["id"] for v in results["variants"]} == VARIANTS
    for v in results["variants"]:
        assert set(v["ppl"]) == {"wiki", "shakespeare"}
        assert all(math.isfinite(p) and p > 1 for p in v["ppl"].values())
        bits = v["bits_per_element"]
        assert bits["total"] == pytest.approx(container_bits(out / v["container"]), rel=1e-12)
        assert bits["total"] == pytest.approx(sum(x for k, x in bits.items() if k != "total"))
        if v["dense"]:
            assert bits == {"values": 16.0, "meta": 0.0, "total": 16.0}
        else:
            assert bits["values"] == 8.0  # fp16 values of a half-dense N:M pattern
            assert ("outlier_values" in bits) == (v["outliers"] is not None)
        for arch, sim in v["sim"].items():
            assert sim["bits_per_element"] == pytest.approx(container_bits(out / sim["container"]))
            for phase in ("prefill", "decode"):
                p = sim[phase]
                assert p["total"]["cycles"] == sum(x["cycles"] for x in p["layers"]) > 0
                assert len(p["layers"]) == 2 * 7  # 2 blocks x q k v o gate up down
                assert p["total"]["traffic_bytes"]["dram"]["total"] > 0
            assert sim["prefill"]["tokens"] == 64 and sim["decode"]["tokens"] == 1
            assert arch in ("rank-8of16", "stc-2of4")
    by_id = {v["id"]: v for v in results["variants"]}
    assert set(by_id["dense"]["sim"]) == {"rank-8of16", "stc-2of4"}
    assert set(by_id["wanda-2of4-base"]["sim"]) == {"rank-8of16", "stc-2of4"}
    assert by_id["wanda-2of4-base"]["sim"]["stc-2of4"]["layout"] == "positional"
    assert set(by_id["wanda-8of16-outliers"]["sim"]) == {"rank-8of16"}
    assert "no outlier side path" in by_id["wanda-2of4-outliers"]["skipped_archs"]["stc-2of4"]
    assert results["pareto"]["bits"]["wiki"]
    assert all(r["bit_exact"] for r in results["formats"]["round_trip"])
    assert not any(t["reused"] for t in results["timings"]["steps"])


def test_report_and_plots(env: dict) -> None:
    out = env["out"]
    results = load(out)
    report = (out / "report.md").read_text()
    assert results["command"] in report
    for v in results["variants"]:
        assert v["label"] in report
        assert f"{v['bits_per_element']['total']:.3f}" in report
    for png in ("ppl_vs_bits.png", "ppl_vs_decode_cycles.png", "ppl_vs_decode_energy.png",
                "layer_breakdown.png"):  # fmt: skip
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"({png})" in report
    assert "Pareto front" in report
    # no pruned model folder is kept: only metrics + container per variant
    assert not list((out / "cache").glob("**/model.safetensors"))
    assert not list((out / "cache").glob(".*"))


def test_rerun_reuses_every_step(env: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached step was computed again")

    before = load(env["out"])
    monkeypatch.setattr(pipeline, "prune_model", no_work)
    monkeypatch.setattr(pipeline, "evaluate", no_work)
    result = invoke(env["model"], env["out"])
    assert result.exit_code == 0, result.output
    after = load(env["out"])
    assert all(t["reused"] for t in after["timings"]["steps"])
    assert stable(after) == stable(before)


def test_changed_setting_recomputes_only_affected_steps(
    env: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    out = tmp_path / "out"
    shutil.copytree(env["out"], out)
    calls = []
    real = pipeline.prune_model

    def counting(*args: object, **kwargs: object) -> dict:
        calls.append((args[1], args[2], kwargs.get("outliers")))
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "prune_model", counting)
    result = invoke(env["model"], out, "--outliers", "8:256", "--patterns", "8:16")
    assert result.exit_code == 0, result.output
    assert calls == [("wanda", "8:16", "8:256")]
    results = load(out)
    steps = {(t["step"], t["name"]): t["reused"] for t in results["timings"]["steps"]}
    assert steps[("prune", "prune + evaluate + encode wanda 8:16")]
    assert not steps[("prune", "prune + evaluate + encode wanda 8:16 +8:256")]
    assert steps[("dense", "evaluate + encode dense model")]
    assert steps[("simulate", "simulate wanda 8:16 on rank-8of16")]
    assert not steps[("simulate", "simulate wanda 8:16 +8:256 on rank-8of16")]
    old = {v["id"]: v for v in load(env["out"])["variants"]}
    new = {v["id"]: v for v in results["variants"]}
    assert new["wanda-8of16-base"]["ppl"] == old["wanda-8of16-base"]["ppl"]
    assert new["wanda-8of16-outliers"]["outliers"] == "8:256"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--patterns", "3:3"], "--patterns"),
        (["--patterns", "50%"], "not N:M"),
        (["--methods", "wanda,obs"], "unknown method 'obs'"),
        (["--variants", "base,everything"], "unknown variant"),
        (["--arch", "no-such-arch"], "no such preset"),
        (["--outliers", "16:128"], "K:256"),
        (["--calib", "0"], "--calib"),
        (["--model", "/no/such/model"], "unknown model or path"),
    ],
)
def test_bad_options_fail_before_work(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", "--model", "smollm2", *args, "-o", str(out)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not out.exists()


def test_formats_only(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", "--formats-only", "--size", "256", "-q", "-o",
                                      str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    results = load(out)
    assert len(results["formats"]["round_trip"]) == 7
    assert all(r["bit_exact"] for r in results["formats"]["round_trip"])
    assert results["formats"]["format_table"]
