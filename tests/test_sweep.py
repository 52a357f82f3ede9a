"""Design-space sweeps: spec validation and a small sweep on a 2-worker LocalCluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nmlab.cli import app
from nmlab.sweep import SweepError, build_workloads, evaluate, load_spec, points

SPEC = """
[sweep]
arch = "rank-8of16"
layers = [{name = "up", out = 64, in = 128}, {name = "down", out = 128, in = 64}]
tokens = [1, 64]
formats = ["dense", "8:16/rank"]

[sweep.axes]
"array.rows" = [16, 32]
"sparse.decoders.0.groups_per_cycle" = [1, 4]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


def test_points_are_the_full_product(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, SPEC))
    assert len(points(spec)) == 2 * 2 * 2 * 2
    workloads = build_workloads(spec)
    slow, fast = (
        evaluate(
            {
                "array.rows": 32,
                "sparse.decoders.0.groups_per_cycle": g,
                "pattern": "8:16",
                "layout": "rank",
                "tokens": 64,
            },
            spec,
            workloads,
        )  # fmt: skip
        for g in (1, 4)
    )
    assert slow["cycles"] >= fast["cycles"]  # a slower rank decoder never helps
    assert slow["stall_cycles"] >= fast["stall_cycles"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[other]\n", r"needs a \[sweep\] table"),
        ('[sweep]\narch = "nope"\n', "no such preset"),
        ('[sweep]\n[sweep.axes]\n"array.depth" = [1]\n', "no field 'depth'"),
        ("[sweep]\ntokens = [0]\n", "positive integers"),
        ('[sweep]\nlayers = "gpt5"\n', "unknown layer preset"),
        ("[sweep\n", "invalid TOML"),
    ],
)
def test_bad_specs(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SweepError, match=message):
        load_spec(write(tmp_path, text))


def test_invalid_axis_value_is_reported_per_point(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, SPEC.replace("[16, 32]", "[0]")))
    row = evaluate({**points(spec)[0]}, spec, build_workloads(spec))
    assert "array.rows" in row["error"]


def test_sweep_on_a_local_cluster_with_two_workers(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["sweep", str(write(tmp_path, SPEC)), "-o", str(tmp_path / "out"), "--workers", "2"]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(rows) == 16 and not any("error" in r for r in rows)
    dense = [r for r in rows if r["pattern"] == "dense" and r["tokens"] == 64]
    sparse = [r for r in rows if r["pattern"] == "8:16" and r["tokens"] == 64]
    assert min(r["dram_bytes"] for r in sparse) < min(r["dram_bytes"] for r in dense)
    assert (tmp_path / "out" / "results.csv").read_text().count("\n") == 17
    assert (tmp_path / "out" / "sweep_tokens1.png").stat().st_size > 10_000


def test_cli_error_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["sweep", str(tmp_path / "missing.toml")])
    assert result.exit_code == 1
    assert result.output.strip().startswith("error:") and "\n" not in result.output.strip()
