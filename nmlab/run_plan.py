"""What `nmlab run` will do: its settings, the variants to prune, which arch runs which.

Everything here is checked before any work starts; a bad option is a RunError (one line).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

VARIANTS = ("base", "vc", "outliers", "outliers+vc")
DTYPE = "float16"  # the value type the hardware stores and multiplies
CANONICAL_LAYOUT = "rank"  # nmlab's format (spec/format.md): the bits/element of a variant

FULL = {"calib": 16, "seqlen": 256, "eval_windows": 16, "tokens": 2048, "size": 4096,
        "variants": "base,outliers,outliers+vc"}  # fmt: skip
# --quick: SparseGPT takes minutes per variant on 2 cores, so only its base variants stay
QUICK = {"calib": 2, "seqlen": 128, "eval_windows": 4, "tokens": 2048, "size": 1024,
         "variants": "wanda/base,wanda/outliers,wanda/outliers+vc,sparsegpt/base"}  # fmt: skip


class RunError(ValueError):
    """A bad option of `nmlab run`; the message is one readable line."""


@dataclass(frozen=True)
class Variant:
    """One model to evaluate: dense, or a method x pattern x (outliers, vc) pruning."""

    method: str  # "dense" for the unpruned model
    pattern: str = "dense"
    outliers: str | None = None
    vc: str = "none"

    @property
    def dense(self) -> bool:
        return self.method == "dense"

    @property
    def kind(self) -> str:
        if self.dense:
            return "dense"
        return {(False, "none"): "base", (False, "weight"): "vc", (True, "none"): "outliers",
                (True, "weight"): "outliers+vc"}[(self.outliers is not None, self.vc)]  # fmt: skip

    @property
    def id(self) -> str:
        if self.dense:
            return "dense"
        return f"{self.method}-{self.pattern.replace(':', 'of')}-{self.kind.replace('+', '-')}"

    @property
    def label(self) -> str:
        if self.dense:
            return "dense"
        extra = (f" +{self.outliers}" if self.outliers else "") + (
            " +VC" if self.vc != "none" else ""
        )
        return f"{self.method} {self.pattern}{extra}"


@dataclass(frozen=True)
class RunSettings:
    model: str
    patterns: tuple[str, ...]
    methods: tuple[str, ...]
    variants: tuple[str, ...]
    archs: tuple[str, ...]
    calib: int
    seqlen: int
    eval_windows: int
    tokens: int
    size: int
    outliers: str = "16:256"
    seed: int = 0
    dtype: str = DTYPE
    quick: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        return d

    def pruned_variants(self) -> list[Variant]:
        """Pattern x method x variant kind; a kind "METHOD/KIND" applies to that method only."""
        out = []
        for pattern in self.patterns:
            for method in self.methods:
                for item in self.variants:
                    only, _, kind = item.rpartition("/")
                    if only and only != method:
                        continue
                    outliers = self.outliers if kind.startswith("outliers") else None
                    vc = "weight" if kind.endswith("vc") else "none"
                    v = Variant(method, pattern, outliers, vc)
                    if v not in out:
                        out.append(v)
        return out


def split_list(text: str, what: str) -> tuple[str, ...]:
    items = tuple(x.strip() for x in text.split(",") if x.strip())
    if not items:
        raise RunError(f"--{what}: empty list")
    if len(set(items)) != len(items):
        raise RunError(f"--{what} {text!r}: an item is repeated")
    return items


def check_pattern(text: str) -> str:
    from nmlab.formats import FormatError
    from nmlab.formats.pattern import Pattern

    if not re.fullmatch(r"\d+:\d+", text):
        raise RunError(f"--patterns: {text!r} is not N:M (e.g. 2:4, 8:16)")
    try:
        Pattern.parse(text)
    except FormatError as err:
        raise RunError(f"--patterns: {text!r}: {err}") from None
    n, m = (int(x) for x in text.split(":"))
    if not (1 <= n < m <= 32):
        raise RunError(f"--patterns: {text!r}: need 1 <= N < M <= 32")
    return text


def check_outliers(text: str) -> str:
    k, _, block = text.partition(":")
    if not (k.isdigit() and block == "256" and 1 <= int(k) <= 64):
        raise RunError(f"--outliers {text!r}: expected K:256 with 1 <= K <= 64, e.g. 16:256")
    return text


def check_settings(s: RunSettings) -> None:
    from nmlab.pruning.methods import METHODS

    for p in s.patterns:
        check_pattern(p)
    for m in s.methods:
        if m not in METHODS:
            raise RunError(f"--methods: unknown method {m!r} (expected {', '.join(METHODS)})")
    for item in s.variants:
        only, _, kind = item.rpartition("/")
        if kind not in VARIANTS:
            raise RunError(
                f"--variants: unknown variant {item!r} (expected {', '.join(VARIANTS)}, "
                "optionally as METHOD/VARIANT)"
            )
        if only and only not in METHODS:
            raise RunError(f"--variants {item!r}: unknown method {only!r}")
    if not s.pruned_variants():
        raise RunError("--variants: no variant applies to the chosen --methods")
    check_outliers(s.outliers)
    limits = (("calib", s.calib, 1), ("seqlen", s.seqlen, 2),
              ("eval-windows", s.eval_windows, 1), ("tokens", s.tokens, 1))  # fmt: skip
    for name, value, low in limits:
        if value < low:
            raise RunError(f"--{name} must be >= {low} (got {value})")
    if s.size < 256 or s.size % 256:
        raise RunError(f"--size {s.size}: must be a positive multiple of 256")


def load_archs(names: tuple[str, ...]) -> dict[str, Any]:
    """{arch name: Arch}; preset names or TOML paths. Empty: every shipped preset."""
    from nmlab.simulator.arch import load_arch, preset_names
    from nmlab.simulator.errors import SimulatorError

    out: dict[str, Any] = {}
    for ref in names or tuple(preset_names()):
        try:
            arch = load_arch(ref)
        except SimulatorError as err:
            raise RunError(f"--arch: {err}") from None
        if arch.name in out:
            raise RunError(f"--arch: two architectures are named {arch.name!r}")
        out[arch.name] = arch
    return out


def why_not(arch: Any, variant: Variant, dtype: str = DTYPE) -> str | None:
    """None if `arch` runs this variant's container natively, else the reason."""
    if dtype not in arch.array.mac_dtypes:
        return f"no {dtype} MACs (mac_dtypes: {', '.join(arch.array.mac_dtypes)})"
    if variant.dense:
        return None
    if not arch.executes(variant.pattern):
        return f"pattern {variant.pattern} not native (native: {', '.join(arch.sparse.native)})"
    if variant.outliers and not (
        arch.sparse.outlier_side_path and arch.sparse.outlier_macs_per_cycle
    ):
        return "no outlier side path"
    if arch.decoder_layout(variant.pattern) is None:
        return f"no metadata decoder for {variant.pattern}"
    return None


def arch_layout(arch: Any, variant: Variant) -> str:
    return "dense" if variant.dense else arch.decoder_layout(variant.pattern)


def layout_arch(pattern: str, layout: str) -> Any:
    """A stand-in Arch whose only decoder reads `layout`, to encode with encode_pruned_dir."""
    from nmlab.simulator.arch import DecoderConfig, SparseConfig, load_arch

    base = load_arch("rank-8of16")
    decoder = DecoderConfig(name=layout, layouts=[layout], patterns=[], groups_per_cycle=1,
                            latency_cycles=0, energy_pj_per_group=0.0)  # fmt: skip
    sparse = SparseConfig(native=["dense", pattern], outlier_side_path=True,
                          outlier_macs_per_cycle=1.0, decoders=[decoder])  # fmt: skip
    return base.model_copy(update={"sparse": sparse})
