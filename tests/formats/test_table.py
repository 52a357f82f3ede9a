"""The format table equals the arithmetic of the mission and of spec section 11."""

import re
from pathlib import Path

import pytest

from nmlab.formats import FormatError
from nmlab.formats.table import format_cost, format_table

# pattern: (bits/group, bits/element, entropy bound, positional) from the mission table
MISSION = {
    "2:4": (3, 0.750, 0.646, 1.000),
    "4:8": (7, 0.875, 0.766, 1.500),
    "8:16": (14, 0.875, 0.853, 2.000),
    "4:256": (28, 0.109, 0.107, 0.125),
    "8:256": (49, 0.191, 0.190, 0.250),
    "16:256": (84, 0.328, 0.324, 0.500),
}


@pytest.mark.parametrize("pattern", sorted(MISSION))
def test_mission_figures(pattern: str) -> None:
    bits, per_element, entropy, positional = MISSION[pattern]
    row = format_cost(pattern)
    assert row.rank_bits_per_group == bits
    assert round(row.rank_bits_per_element, 3) == per_element
    assert round(row.entropy_bits_per_element, 3) == entropy
    assert round(row.positional_bits_per_element, 3) == positional


def test_spec_table_matches_the_code() -> None:
    spec = (Path(__file__).resolve().parents[2] / "spec" / "format.md").read_text()
    section = spec[spec.index("## 11.") :]
    rows = re.findall(r"^\| (\d+:\d+) \| [^|]+ \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$",
                      section, flags=re.M)  # fmt: skip
    assert len(rows) == 7
    for pattern, bits, per_element, entropy, positional in rows:
        row = format_cost(pattern)
        assert row.rank_bits_per_group == int(bits)
        assert f"{row.rank_bits_per_element:.3f}" == per_element
        assert f"{row.entropy_bits_per_element:.3f}" == entropy
        assert f"{row.positional_bits_per_element:.3f}" == positional


def test_joint_packing_beats_fixed_rank_and_stays_above_entropy() -> None:
    for row in format_table(["2:4", "4:8", "8:16", "16:32", "6:16", "3:7"]):
        assert row.entropy_bits_per_element <= row.joint_bits_per_element
        assert row.joint_bits_per_element <= row.rank_bits_per_element
    assert format_cost("2:4").joint_bits_per_element < 0.65


def test_custom_and_bad_patterns() -> None:
    assert format_cost("6:16").rank_bits_per_group == 13
    assert [r.pattern for r in format_table(["2:4", "2:4", "6:16"])] == ["2:4", "6:16"]
    for bad in ("16:16", "9:7", "x", "70:256", "2:33"):
        with pytest.raises(FormatError):
            format_cost(bad)
