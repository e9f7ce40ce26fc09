"""Folk tunes in ABC notation from the music21 corpus, split by tune (raw; the cleaning for a
language model is :func:`genai_course.music.load_tunes`)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .splits import _FRACTIONS_80_10_10, _check_split, stratified_split

__all__ = ["load_abc_tunes"]


# folk tunes in ABC notation

_ABC_COLLECTIONS = ("essenFolksong", "oneills1850", "ryansMammoth")
_ABC_MAX_CHARS = 1500


def _tunes_in_abc_file(text: str) -> list[str]:
    """Cut an ABC file into cleaned tunes: ``X:`` line to next ``X:``, no comments or blanks.

    A tune is kept if its header (the lines up to the first ``K:``) has an ``M:`` line, it
    has a non-empty body after ``K:``, and it is at most ``_ABC_MAX_CHARS`` characters long.
    """
    chunks: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("X:"):
            chunks.append([line])
        elif chunks:
            chunks[-1].append(line)
    tunes = []
    for chunk in chunks:
        lines = [ln.rstrip() for ln in chunk if ln.strip() and not ln.lstrip().startswith("%")]
        key_line = next((i for i, ln in enumerate(lines) if ln.startswith("K:")), None)
        if key_line is None or key_line == len(lines) - 1:
            continue
        if not any(ln.startswith("M:") for ln in lines[:key_line]):
            continue
        tune = "\n".join(lines)
        if len(tune) <= _ABC_MAX_CHARS:
            tunes.append(tune)
    return tunes


@functools.lru_cache(maxsize=4)
def _abc_tunes(collections: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Split name -> tunes of the music21 ABC ``collections``, split 80/10/10 by tune."""
    from music21 import corpus

    paths = sorted(
        Path(p)
        for p in corpus.getPaths(fileExtensions=("abc",))
        if Path(p).parent.name in collections
    )
    tunes: list[str] = []
    seen: set[str] = set()
    for path in paths:
        for tune in _tunes_in_abc_file(path.read_text(encoding="utf-8", errors="replace")):
            # X: only numbers tunes within a file, so the same tune under another number is
            # still a duplicate and must not end up in two splits.
            key = tune.split("\n", 1)[1]
            if key not in seen:
                seen.add(key)
                tunes.append(tune)
    split_index = stratified_split(np.zeros(len(tunes), dtype=np.int64), _FRACTIONS_80_10_10)
    return {split: tuple(tunes[i] for i in index) for split, index in split_index.items()}


def load_abc_tunes(
    split: str = "train", *, collections: Sequence[str] = _ABC_COLLECTIONS
) -> list[str]:
    """Folk tunes in ABC notation from the music21 corpus, one string per tune.

    About 11,500 tunes from ``collections`` (sub-folders of the music21 corpus: German folk
    songs, O'Neill's Irish tunes, Ryan's Mammoth Collection). Each tune starts with its
    ``X:`` line, keeps its header (``T:``, ``M:``, ``L:``, ``K:``, ...) and body, and drops
    ``%`` comment lines and blank lines. Only tunes with ``M:`` and ``K:`` headers, a body,
    and at most 1,500 characters are kept; duplicates are dropped. Split 80/10/10 by tune.

    Returns:
        list of str, the tunes of the split in corpus order (sorted file paths).
    """
    _check_split(split)
    if isinstance(collections, str):
        raise TypeError(f"collections must be a sequence of names, got the string {collections!r}")
    collections = tuple(collections)
    if not collections:
        raise ValueError("collections must name at least one music21 corpus folder")
    tunes = _abc_tunes(collections)
    if not any(tunes.values()):
        raise ValueError(f"no ABC tunes found in music21 corpus folders {collections}")
    return list(tunes[split])
