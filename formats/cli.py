"""`nmlab formats table`, `nmlab encode`, `nmlab decode`, `nmlab inspect`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import ml_dtypes
import numpy as np
import typer

from .errors import FormatError

formats_app = typer.Typer(help="Format arithmetic.", no_args_is_help=True)


def fail(message: str) -> None:
    """One readable line on stderr, exit status 1, no traceback."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


@formats_app.command("table")
def table_command(
    pattern: Annotated[
        list[str] | None, typer.Option("--pattern", "-p", help="Extra pattern, e.g. 6:16 or 4:256")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
) -> None:
    """Bits per group and per element of every position encoding, against the entropy bound."""
    from .table import DEFAULT_PATTERNS, format_table

    try:
        rows = format_table(list(DEFAULT_PATTERNS) + list(pattern or []))
    except FormatError as err:
        fail(str(err))
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row.as_dict()))
        return
    print_table(rows)


def print_table(rows: list) -> None:  # noqa: ANN001 - list[FormatCost]
    from rich.console import Console
    from rich.table import Table

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    table = Table(title="Metadata cost (bits per element unless stated)")
    for col in ("pattern", "C(M,N)", "bits/group", "rank", "entropy", "joint (G)", "positional",
                "bitmask", "NVIDIA 2:4"):  # fmt: skip
        table.add_column(col, justify="right")
    for r in rows:
        joint = (
            "-" if r.joint_groups is None else f"{fmt(r.joint_bits_per_element)} ({r.joint_groups})"
        )
        table.add_row(
            r.pattern, f"{r.combinations:.3g}" if r.combinations > 1e6 else str(r.combinations),
            str(r.rank_bits_per_group), fmt(r.rank_bits_per_element),
            fmt(r.entropy_bits_per_element), joint, fmt(r.positional_bits_per_element),
            fmt(r.bitmask_bits_per_element), fmt(r.nvidia_bits_per_element),
        )  # fmt: skip
    Console().print(table)


def read_array(path: Path) -> np.ndarray:
    """A 2-D array from .npy (bf16 as ml_dtypes) or from a one-tensor safetensors file."""
    if not path.exists():
        fail(f"{path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.numpy import load_file

            arrays = load_file(str(path))
            if len(arrays) != 1:
                fail(f"{path}: holds {len(arrays)} tensors; give a file with exactly one")
            return next(iter(arrays.values()))
        array = np.load(path, allow_pickle=False)
        if array.dtype.kind == "V" and array.dtype.itemsize == 2:  # how .npy stores bf16
            array = array.view(ml_dtypes.bfloat16)
        return array
    except (ValueError, OSError) as err:
        fail(f"{path}: cannot read an array ({str(err).splitlines()[0]})")
    raise AssertionError  # unreachable: fail() exits


def encode_command(
    input: Annotated[
        Path,
        typer.Argument(help="Dense, already sparse 2-D array (.npy or one-tensor .safetensors)"),
    ],
    pattern: Annotated[str, typer.Option("--pattern", "-p", help="N:M, e.g. 8:16")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Container to write")],
    layout: Annotated[str, typer.Option(help="rank|joint|bitmask|positional|cutlass")] = "rank",
    outliers: Annotated[str | None, typer.Option(help="K:256 outlier stream, e.g. 16:256")] = None,
    outlier_layout: Annotated[str, typer.Option(help="rank|index")] = "rank",
    joint_groups: Annotated[int | None, typer.Option(help="Groups per joint word")] = None,
    name: Annotated[str, typer.Option(help="Tensor name in the container")] = "weight",
) -> None:
    """Encode a dense array that satisfies the N:M pattern into a container."""
    from .codec import encode
    from .container import save

    array = read_array(input)
    try:
        enc = encode(
            array, pattern, layout=layout, outliers=outliers, outlier_layout=outlier_layout,
            joint_groups=joint_groups,
        )  # fmt: skip
        save(output, {name: enc})
    except FormatError as err:
        fail(str(err))
    bits = enc.bits_per_element()
    typer.echo(
        f"{output}: {enc.shape[0]}x{enc.shape[1]} {enc.dtype} {pattern} {layout}, "
        f"{bits['total']:.3f} bits/element ({bits['meta']:.3f} metadata)"
    )


def decode_command(
    input: Annotated[Path, typer.Argument(help="Container written by `nmlab encode`")],
    output: Annotated[Path, typer.Option("--output", "-o", help=".npy or .safetensors to write")],
    name: Annotated[
        str | None, typer.Option(help="Tensor to decode (default: the only one)")
    ] = None,
) -> None:
    """Decode one tensor of a container back to a dense .npy array."""
    from .codec import decode
    from .container import load

    try:
        tensors = load(input, [name] if name else None)
        if len(tensors) != 1:
            fail(f"{input}: holds {len(tensors)} tensors; choose one with --name")
        array = decode(next(iter(tensors.values())))
    except FormatError as err:
        fail(str(err))
    if output.suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file({"weight": np.ascontiguousarray(array)}, str(output))
    else:
        np.save(output, array, allow_pickle=False)
    typer.echo(f"{output}: {array.shape[0]}x{array.shape[1]} {array.dtype}")


def inspect_command(
    input: Annotated[Path, typer.Argument(help="Container to describe")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Pattern, sizes and the bits per element each stream actually uses."""
    from .container import load

    try:
        tensors = load(input)
    except FormatError as err:
        fail(str(err))
    rows = []
    for name, enc in tensors.items():
        rows.append({
            "name": name, "shape": list(enc.shape), "dtype": enc.dtype,
            "pattern": str(enc.pattern) if enc.pattern else None, "layout": enc.layout,
            "outliers": str(enc.outliers.pattern) if enc.outliers else None,
            "outlier_layout": enc.outliers.layout if enc.outliers else None,
            "bytes": enc.stream_bytes(), "bits_per_element": enc.bits_per_element(),
        })  # fmt: skip
    if as_json:
        typer.echo(json.dumps({"file": str(input), "tensors": rows}))
        return
    for r in rows:
        bpe = r["bits_per_element"]
        parts = ", ".join(f"{k} {v:.3f}" for k, v in bpe.items() if k != "total")
        out = f" + outliers {r['outliers']} ({r['outlier_layout']})" if r["outliers"] else ""
        typer.echo(
            f"{r['name']}: {r['shape'][0]}x{r['shape'][1]} {r['dtype']} {r['pattern']} "
            f"{r['layout']}{out}; {sum(r['bytes'].values())} bytes; "
            f"{bpe['total']:.4f} bits/element ({parts})"
        )


def register(app: typer.Typer) -> None:
    app.add_typer(formats_app, name="formats")
    app.command("encode")(encode_command)
    app.command("decode")(decode_command)
    app.command("inspect")(inspect_command)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(typer.main.get_command(formats_app)())
