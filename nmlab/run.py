"""`nmlab run`: the main job. For now: the format table and a bit-exact round trip
of a real-sized matrix in every layout; later steps add prune -> encode -> simulate."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer


def keep_largest(weight: np.ndarray, n: int, m: int) -> np.ndarray:
    """Zero all but the n largest-magnitude elements of each group of m (demo input only)."""
    rows, cols = weight.shape
    groups = weight.reshape(rows, cols // m, m).copy()
    drop = np.argsort(np.abs(groups), axis=2, kind="stable")[..., : m - n]
    np.put_along_axis(groups, drop, 0, axis=2)
    return groups.reshape(rows, cols)


def round_trip_rows(size: int, seed: int = 0) -> list[dict]:
    from nmlab.formats import decode, encode

    rng = np.random.default_rng(seed)
    dense = rng.standard_t(df=4, size=(size, size)).astype(np.float32)
    rows = []
    cases = [("2:4", "rank", None), ("2:4", "joint", None), ("2:4", "bitmask", None),
             ("2:4", "positional", None), ("8:16", "rank", None), ("8:16", "joint", None),
             ("8:16", "rank", "16:256")]  # fmt: skip
    for pattern, layout, outliers in cases:
        n, m = (int(x) for x in pattern.split(":"))
        weight = dense
        outlier_mask = None
        if outliers:  # the 16 largest per 256-block stay dense, the rest is pruned n:m
            k = int(outliers.split(":")[0])
            blocks = np.abs(dense).reshape(size, -1, 256)
            top = np.argsort(-blocks, axis=2, kind="stable")[..., :k]
            outlier_mask = np.zeros(blocks.shape, bool)
            np.put_along_axis(outlier_mask, top, True, axis=2)
            outlier_mask = outlier_mask.reshape(size, size)
            weight = np.where(outlier_mask, 0, dense)
        sparse = keep_largest(weight, n, m)
        if outlier_mask is not None:
            sparse = np.where(outlier_mask, dense, sparse)
        sparse = sparse.astype(np.float16)
        start = time.perf_counter()
        enc = encode(sparse, pattern, layout=layout, outliers=outliers, outlier_mask=outlier_mask)
        encoded = time.perf_counter()
        back = decode(enc)
        decoded = time.perf_counter()
        exact = bool(np.array_equal(back.view(np.uint16), sparse.view(np.uint16)))
        bits = enc.bits_per_element()
        rows.append({
            "pattern": pattern, "layout": layout, "outliers": outliers, "shape": [size, size],
            "bit_exact": exact, "metadata_bits_per_element": bits["meta"],
            "outlier_bits_per_element": bits.get("outlier_positions", 0.0)
            + bits.get("outlier_values", 0.0),
            "total_bits_per_element": bits["total"], "encode_s": encoded - start,
            "decode_s": decoded - encoded,
        })  # fmt: skip
    return rows


def run_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="Results folder")] = Path(
        "results"
    ),
    size: Annotated[int, typer.Option(help="Rows and columns of the round-trip matrix")] = 4096,
) -> None:
    """Run the main job: format table and a bit-exact round trip of a size x size matrix."""
    from rich.console import Console
    from rich.table import Table

    from nmlab.formats.cli import fail, print_table
    from nmlab.formats.table import format_table

    if size < 256 or size % 256:
        fail(f"--size {size}: must be a positive multiple of 256")
    print_table(format_table())
    rows = round_trip_rows(size)
    table = Table(title=f"Round trip of a {size}x{size} fp16 matrix (Student-t weights)")
    for col in ("pattern", "layout", "outliers", "bit-exact", "meta b/e", "total b/e", "enc s",
                "dec s"):  # fmt: skip
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["pattern"], r["layout"], r["outliers"] or "-", "yes" if r["bit_exact"] else "NO",
            f"{r['metadata_bits_per_element']:.3f}", f"{r['total_bits_per_element']:.3f}",
            f"{r['encode_s']:.2f}", f"{r['decode_s']:.2f}",
        )  # fmt: skip
    Console().print(table)
    output.mkdir(parents=True, exist_ok=True)
    result = {"format_table": [r.as_dict() for r in format_table()], "round_trip": rows}
    (output / "results.json").write_text(json.dumps(result, indent=2))
    typer.echo(f"wrote {output / 'results.json'}")
    if not all(r["bit_exact"] for r in rows):
        fail("a round trip was not bit-exact")


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
