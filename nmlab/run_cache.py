"""The step cache of `nmlab run`: OUTPUT/cache/<step>-<key>/, one folder per finished step.

A key is a hash of everything the step's result depends on (settings, the upstream
step's key, the model's identity, the nmlab version and a digest of the sources of
nmlab.formats, nmlab.pruning and nmlab.simulator, so an edited algorithm is never answered
from a stale cache). A folder appears only when
complete: it is written as a temporary sibling and renamed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nmlab


@functools.cache
def code_digest() -> str:
    """SHA-256 (16 hex digits) of the .py files of the packages whose results are cached."""
    import importlib

    h = hashlib.sha256()
    for name in ("nmlab.formats", "nmlab.pruning", "nmlab.simulator"):
        folder = Path(importlib.import_module(name).__file__).parent  # type: ignore[arg-type]
        for f in sorted(folder.glob("*.py")):
            h.update(f"{name}/{f.name}\0".encode() + f.read_bytes())
    return h.hexdigest()[:16]


def make_key(step: str, inputs: dict[str, Any]) -> str:
    """16 hex digits of SHA-256 over the canonical JSON of (step, inputs, nmlab version,
    code digest)."""
    doc = {"step": step, "inputs": inputs, "nmlab": nmlab.__version__, "code": code_digest()}
    text = json.dumps(doc, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_identity(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A model folder's identity: resolved path plus name, size and mtime of its files."""
    folder = Path(path).resolve()
    files = {
        f.name: [f.stat().st_size, f.stat().st_mtime_ns]
        for f in sorted(folder.iterdir())
        if f.is_file() and f.suffix in (".safetensors", ".json", ".model", ".txt")
    }
    return {"path": str(folder), "files": files}


def file_digest(path: str | os.PathLike[str]) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


class StepCache:
    """Finished steps under ROOT; `get_or_make` reuses a folder or builds it atomically."""

    def __init__(self, root: str | os.PathLike[str], force: bool = False) -> None:
        self.root = Path(root)
        self.force = force

    def folder(self, step: str, key: str) -> Path:
        return self.root / f"{step}-{key}"

    def work_folder(self, step: str, key: str) -> Path:
        """Scratch space of an unfinished step; stable across runs so a step may resume."""
        return self.root / f".work-{step}-{key}"

    def has(self, step: str, key: str) -> bool:
        return (self.folder(step, key) / "done.json").is_file()

    def done(self, step: str, key: str) -> dict[str, Any]:
        """The summary a finished step left (with "seconds": how long computing it took)."""
        return json.loads((self.folder(step, key) / "done.json").read_text())

    def get_or_make(
        self, step: str, key: str, make: Callable[[Path], dict[str, Any]]
    ) -> tuple[Path, bool]:
        """(finished folder, reused?). `make(tmp)` fills tmp and returns a small summary."""
        final = self.folder(step, key)
        if self.has(step, key) and not self.force:
            return final, True
        t0 = time.perf_counter()
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{step}-{key}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            summary = make(tmp)
            seconds = round(time.perf_counter() - t0, 2)
            done = {"step": step, "key": key, "seconds": seconds, **summary}
            (tmp / "done.json").write_text(json.dumps(done))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final, False
