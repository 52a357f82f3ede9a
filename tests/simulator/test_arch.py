"""Architecture files: presets load, validation errors name the field and the allowed range."""

from __future__ import annotations

import tomllib

import pytest

from nmlab.simulator.arch import config_path, load_arch, parse_arch, preset_names
from nmlab.simulator.energy import load_energy_table
from nmlab.simulator.errors import SimulatorError
from nmlab.simulator.simulate import simulate
from nmlab.simulator.workload import Workload, synthetic_encoded


def test_presets_load():
    assert set(preset_names()) >= {"scalesim-ws32", "stc-2of4", "rank-8of16"}
    ws = load_arch("scalesim-ws32")
    assert (ws.array.rows, ws.array.cols, ws.array.dataflow) == (32, 32, "ws")
    assert ws.buffers.inputs.size_kib == ws.buffers.weights.size_kib == 64
    stc = load_arch("stc-2of4")
    assert stc.executes("2:4") and not stc.executes("8:16")
    rank = load_arch("rank-8of16")
    assert rank.decoder_for("8:16", "rank").name == "rank-unranker"
    # rank, bitmask and nibble decoders are separate hardware with separate prices
    names = {d.name for d in rank.sparse.decoders} | {d.name for d in stc.sparse.decoders}
    assert {"rank-unranker", "bitmask", "nibble-2of4"} <= names
    prices = {d.name: d.energy_pj_per_group for d in rank.sparse.decoders + stc.sparse.decoders}
    assert len({prices["rank-unranker"], prices["bitmask"], prices["nibble-2of4"]}) == 3


def _preset_dict(name: str) -> dict:
    return tomllib.loads(config_path(name).read_text())


@pytest.mark.parametrize(
    ("section", "field", "value", "expected"),
    [
        ("array", "rows", 0, "array.rows: Input should be greater than or equal to 1"),
        ("array", "cols", 5000, "array.cols: Input should be less than or equal to 1024"),
        ("array", "dataflow", "rs", "array.dataflow: Input should be 'ws' or 'os'"),
        (
            "dram",
            "bandwidth_bytes_per_cycle",
            -1,
            "dram.bandwidth_bytes_per_cycle: Input should be greater than 0",
        ),
        ("sparse", "native", ["dense", "9:4"], "sparse.native"),
    ],
)
def test_validation_error_names_field(section, field, value, expected):
    data = _preset_dict("rank-8of16")
    data[section][field] = value
    with pytest.raises(SimulatorError) as info:
        parse_arch(data, "my.toml")
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_unknown_fields():
    data = _preset_dict("scalesim-ws32")
    del data["array"]["rows"]
    data["array"]["colz"] = 3
    with pytest.raises(SimulatorError) as info:
        parse_arch(data, "x.toml")
    assert "array.rows: required field is missing" in str(info.value)
    assert "array.colz: unknown field" in str(info.value)


def test_decoder_field_errors():
    data = _preset_dict("rank-8of16")
    data["sparse"]["decoders"][0]["groups_per_cycle"] = 0
    with pytest.raises(SimulatorError, match=r"sparse\.decoders\.0\.groups_per_cycle"):
        parse_arch(data)


def test_unknown_preset_and_bad_toml(tmp_path):
    with pytest.raises(SimulatorError, match="no such preset"):
        load_arch("no-such-arch")
    bad = tmp_path / "bad.toml"
    bad.write_text("[array\nrows = 3")
    with pytest.raises(SimulatorError, match="not valid TOML"):
        load_arch(bad)


def test_energy_table_has_sources():
    table = load_energy_table()
    assert table.mac_pj["int8"] == pytest.approx(0.3)
    assert all("Horowitz" in table.sources[f"mac_pj.{k}"] for k in ("int8", "float16", "float32"))
    assert table.sram_pj_per_64bit(8) == 10.0
    assert table.sram_pj_per_64bit(32) == 20.0
    assert table.sram_pj_per_64bit(1024) == 100.0
    assert 20.0 < table.sram_pj_per_64bit(64) < 100.0


def test_arch_file_with_own_energy_table(tmp_path):
    table = config_path("energy_45nm").read_text().replace("value = 0.30", "value = 0.60")
    (tmp_path / "mine.toml").write_text(table)
    data = (
        config_path("scalesim-ws32")
        .read_text()
        .replace('energy_table = "energy_45nm"', 'energy_table = "mine.toml"')
    )
    (tmp_path / "arch.toml").write_text(data)
    enc = synthetic_encoded(32, 32, "dense", "dense", "int8")
    base = simulate(load_arch("scalesim-ws32"), Workload.from_encoded(enc, 4))
    mine = simulate(load_arch(tmp_path / "arch.toml"), Workload.from_encoded(enc, 4))
    assert mine.energy_pj["mac"] == pytest.approx(2 * base.energy_pj["mac"])
    assert mine.energy_table.endswith("mine.toml")
