"""The formats command line: happy paths and one-line errors."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from nmlab.cli import app

from .helpers import bits_of, random_nm

runner = CliRunner()


def assert_one_line_error(result, text: str) -> None:  # noqa: ANN001
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert text in lines[0]
    assert "Traceback" not in result.output


def test_table_json_includes_custom_patterns() -> None:
    result = runner.invoke(app, ["formats", "table", "--pattern", "6:16", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["pattern"] for r in rows][-1] == "6:16"
    assert {r["pattern"] for r in rows} >= {"2:4", "4:8", "8:16", "16:32", "4:256", "8:256"}
    assert runner.invoke(app, ["formats", "table"]).exit_code == 0


def test_table_rejects_bad_pattern() -> None:
    assert_one_line_error(runner.invoke(app, ["formats", "table", "-p", "9:4"]), "9:4")


def test_encode_inspect_decode_round_trip(tmp_path) -> None:  # noqa: ANN001
    array = random_nm(np.random.default_rng(1), 32, 576, 8, 16, np.float16)
    np.save(tmp_path / "w.npy", array)
    out = tmp_path / "w.safetensors"
    result = runner.invoke(app, ["encode", str(tmp_path / "w.npy"), "--pattern", "8:16",
                                 "--outliers", "16:256", "-o", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["inspect", str(out), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)["tensors"][0]
    assert info["pattern"] == "8:16" and info["outliers"] == "16:256"
    assert info["bits_per_element"]["meta"] == 0.875
    assert abs(info["bits_per_element"]["outlier_positions"] - (2 * 84 + 20) / 576) < 0.01
    assert "bits/element" in runner.invoke(app, ["inspect", str(out)]).output
    result = runner.invoke(app, ["decode", str(out), "-o", str(tmp_path / "back.npy")])
    assert result.exit_code == 0, result.output
    assert np.array_equal(bits_of(np.load(tmp_path / "back.npy")), bits_of(array))


def test_cli_errors_are_one_line(tmp_path) -> None:  # noqa: ANN001
    dense = np.ones((4, 16), np.float16)
    np.save(tmp_path / "dense.npy", dense)
    result = runner.invoke(app, ["encode", str(tmp_path / "dense.npy"), "-p", "2:4", "-o",
                                 str(tmp_path / "o.safetensors")])  # fmt: skip
    assert_one_line_error(result, "row 0, group 0")
    assert not (tmp_path / "o.safetensors").exists()
    result = runner.invoke(app, ["encode", str(tmp_path / "nope.npy"), "-p", "2:4", "-o", "x"])
    assert_one_line_error(result, "no such file")
    (tmp_path / "junk.safetensors").write_bytes(b"\x10" + b"\0" * 7 + b"{}")
    result = runner.invoke(app, ["decode", str(tmp_path / "junk.safetensors"), "-o", "x.npy"])
    assert_one_line_error(result, "junk.safetensors")
    result = runner.invoke(app, ["inspect", str(tmp_path / "junk.safetensors")])
    assert_one_line_error(result, "junk.safetensors")


def test_run_main_job_small(tmp_path) -> None:  # noqa: ANN001
    result = runner.invoke(app, ["run", "--formats-only", "--size", "256", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "results.json").read_text())
    assert all(row["bit_exact"] for row in results["formats"]["round_trip"])
    assert len(results["formats"]["format_table"]) == 7


def test_bfloat16_through_npy_and_safetensors(tmp_path) -> None:  # noqa: ANN001
    import ml_dtypes

    array = random_nm(np.random.default_rng(2), 8, 64, 2, 4, ml_dtypes.bfloat16)
    np.save(tmp_path / "b.npy", array)  # .npy stores bf16 as 2-byte void
    out = tmp_path / "b.safetensors"
    args = ["encode", str(tmp_path / "b.npy"), "-p", "2:4", "--layout", "joint", "-o", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    result = runner.invoke(app, ["decode", str(out), "-o", str(tmp_path / "back.safetensors")])
    assert result.exit_code == 0, result.output
    from safetensors.numpy import load_file

    back = load_file(str(tmp_path / "back.safetensors"))["weight"]
    assert back.dtype == ml_dtypes.bfloat16
    assert np.array_equal(bits_of(back), bits_of(array))


def test_encode_cutlass_layout(tmp_path) -> None:  # noqa: ANN001
    array = random_nm(np.random.default_rng(4), 32, 64, 2, 4, np.float16)
    np.save(tmp_path / "c.npy", array)
    out = tmp_path / "c.safetensors"
    args = ["encode", str(tmp_path / "c.npy"), "-p", "2:4", "--layout", "cutlass", "-o", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    info = json.loads(runner.invoke(app, ["inspect", str(out), "--json"]).output)["tensors"][0]
    assert info["layout"] == "cutlass" and info["bits_per_element"]["meta"] == 1.0
    result = runner.invoke(app, ["decode", str(out), "-o", str(tmp_path / "back.npy")])
    assert np.array_equal(bits_of(np.load(tmp_path / "back.npy")), bits_of(array))
    np.save(tmp_path / "odd.npy", array[:, :48])
    bad = ["encode", str(tmp_path / "odd.npy"), "-p", "2:4", "--layout", "cutlass", "-o", "x"]
    assert_one_line_error(runner.invoke(app, bad), "multiple of")
