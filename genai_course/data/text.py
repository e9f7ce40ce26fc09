"""Text datasets: names labelled by locale (faker) and the Python language reference
(``pydoc_data``), split by topic, with per-character labels for probes and its tokenizer."""

from __future__ import annotations

import functools
import importlib
import re
import unicodedata
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .splits import _FRACTIONS_80_10_10, SPLITS, _check_split, _split_by_weight, stratified_split
from .tokenizers import CharTokenizer

__all__ = [
    "NAME_LOCALES",
    "load_names",
    "load_python_docs",
    "python_docs_char_labels",
    "python_docs_tokenizer",
    "python_docs_topics",
]


# names by locale

# Locales whose faker provider lists several hundred Latin-script first and last names.
# pl_PL (a single last name), tr_TR (60 last names) and pt_BR (about 60 last names not shared
# with other locales) were replaced by hr_HR, hu_HU and sv_SE.
NAME_LOCALES = (
    "en_US",
    "de_DE",
    "fr_FR",
    "it_IT",
    "es_ES",
    "nl_NL",
    "fi_FI",
    "hr_HR",
    "hu_HU",
    "sv_SE",
)
_NAME_KINDS = ("last", "first")


def _is_plain_latin_name(name: str) -> bool:
    """True for names of Latin letters, spaces, apostrophes and hyphens, 2 to 20 characters."""
    return 2 <= len(name) <= 20 and all(
        char in " '-" or unicodedata.name(char, "").startswith("LATIN") for char in name
    )


@functools.lru_cache(maxsize=8)
def _names_table(
    locales: tuple[str, ...], kind: str
) -> tuple[tuple[str, ...], np.ndarray, dict[str, np.ndarray]]:
    """All names of ``kind`` unique to one of ``locales``, their locale index and the splits."""
    per_locale = []
    for locale in locales:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        # Some providers store tuples, others OrderedDicts of name -> weight; iterating over
        # either gives the names.
        raw = getattr(provider, f"{kind}_names")
        per_locale.append({name.strip() for name in raw} - {""})
    seen_in: dict[str, int] = {}
    for names in per_locale:
        for name in names:
            seen_in[name] = seen_in.get(name, 0) + 1
    names_out: list[str] = []
    labels: list[int] = []
    for label, names in enumerate(per_locale):
        # A name listed by two locales has no well-defined label, so it goes.
        kept = sorted(n for n in names if seen_in[n] == 1 and _is_plain_latin_name(n))
        names_out.extend(kept)
        labels.extend([label] * len(kept))
    label_array = np.asarray(labels, dtype=np.int64)
    label_array.setflags(write=False)
    return tuple(names_out), label_array, stratified_split(label_array, _FRACTIONS_80_10_10)


def load_names(
    split: str = "train", *, locales: Sequence[str] = NAME_LOCALES, kind: str = "last"
) -> tuple[list[str], Tensor]:
    """First or last names labelled by the locale they come from, from faker's name lists.

    Names are stripped, kept if 2 to 20 characters of Latin letters, spaces, apostrophes or
    hyphens, and dropped if more than one of ``locales`` lists them (so each label is well
    defined). The split is stratified by locale, 80/10/10, so every locale is in every split.

    Args:
        split: one of ``SPLITS``.
        locales: a subset of ``NAME_LOCALES``, in the order that defines the labels.
        kind: ``"last"`` or ``"first"``.

    Returns:
        names: list of N str, locales interleaved in a fixed random order;
        labels: int64 (N,) index into ``locales`` of each name's locale.
    """
    _check_split(split)
    if kind not in _NAME_KINDS:
        raise ValueError(f"kind must be one of {_NAME_KINDS}, got {kind!r}")
    if isinstance(locales, str):
        raise TypeError(f"locales must be a sequence of locale names, got the string {locales!r}")
    locales = tuple(locales)
    unknown = [loc for loc in locales if loc not in NAME_LOCALES]
    if unknown:
        raise ValueError(f"unknown locale(s) {unknown}; known: {', '.join(NAME_LOCALES)}")
    if not locales or len(set(locales)) != len(locales):
        raise ValueError(f"locales must be non-empty and without repeats, got {locales}")
    names, labels, split_index = _names_table(locales, kind)
    index = split_index[split]
    return [names[i] for i in index], torch.from_numpy(labels[index])


# Python language reference


@functools.lru_cache(maxsize=1)
def _python_docs_split() -> dict[str, tuple[tuple[str, str], ...]]:
    """Split name -> (topic, text) pairs, whole topics assigned to hold ~80/10/10 % of chars."""
    from pydoc_data.topics import topics

    keys = sorted(topics)
    assigned = _split_by_weight([len(topics[k]) for k in keys], _FRACTIONS_80_10_10)
    return {
        split: tuple((keys[i], topics[keys[i]]) for i in indices)
        for split, indices in assigned.items()
    }


def python_docs_topics(split: str = "train") -> list[tuple[str, str]]:
    """The (topic, text) pairs of one split of the Python language reference.

    Topics (e.g. ``"assignment"``, ``"for"``) are those of ``pydoc_data.topics``, the text
    behind ``help("for")``; their number and text depend on the Python version. Each topic is
    in exactly one split; topics are shuffled with ``SPLIT_SEED`` and val and test are filled
    up to 10 % of all characters each, train taking the rest (about 80 %).

    Returns:
        list of (topic, text) pairs in the split's (shuffled) order.
    """
    _check_split(split)
    return list(_python_docs_split()[split])


def load_python_docs(split: str = "train") -> str:
    """One split of the Python language reference as a single string (~465 KB in all).

    The split's topics from ``python_docs_topics(split)``, joined in order with blank lines.
    Splitting by topic keeps a section from leaking into two splits.
    """
    return "\n\n".join(text for _, text in python_docs_topics(split))


_HEADING_RULE = re.compile(r"[=\-*~^]{3,}")


def python_docs_char_labels(text: str) -> dict[str, np.ndarray]:
    """Per-character properties of Python-reference text, targets for linear probes (ch. 10).

    Each is a bool array of ``len(text)``:

    - ``in_quotes``: an odd number of ``"`` come before the character on its line (the text
      quotes inline code this way: ``"object.__dir__()"``), so the closing quote is inside;
    - ``in_brackets``: at least one ``(``, ``[`` or ``{`` before it is still open; the depth
      counts from the start of each paragraph (blank lines reset it, so a stray ``)`` of an
      enumeration cannot spread) and never goes below zero;
    - ``heading``: the character is on a section title, i.e. a non-blank line whose *next*
      line is a rule of ``=``, ``-``, ``*``, ``~`` or ``^`` (at least 3). A left-to-right
      model cannot know this before it reads the rule; a bidirectional one can.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    n = len(text)
    in_quotes = np.zeros(n, dtype=bool)
    in_brackets = np.zeros(n, dtype=bool)
    heading = np.zeros(n, dtype=bool)
    lines = text.split("\n")
    pos, depth = 0, 0
    for i, line in enumerate(lines):
        if not line.strip():
            depth = 0
        quotes = 0
        for j, char in enumerate(line):
            in_quotes[pos + j] = quotes % 2 == 1
            in_brackets[pos + j] = depth > 0
            quotes += char == '"'
            if char in "([{":
                depth += 1
            elif char in ")]}":
                depth = max(0, depth - 1)
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if (
            line.strip()
            and _HEADING_RULE.fullmatch(nxt.strip())
            and not _HEADING_RULE.fullmatch(line.strip())
        ):
            heading[pos : pos + len(line)] = True
        pos += len(line) + 1  # the newline keeps the labels of nothing (all False)
    return {"in_quotes": in_quotes, "in_brackets": in_brackets, "heading": heading}


def python_docs_tokenizer() -> CharTokenizer:
    """The characters of the whole Python reference (all splits), so any split encodes."""
    return CharTokenizer.from_text("".join(load_python_docs(s) for s in SPLITS))
