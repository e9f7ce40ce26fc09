"""List numbers typed into the prose of the notebooks, so that measured results come from runs.

A measured result stated in a chapter's prose (a loss, an accuracy, a FID, a ratio, a time) must be
printed by the cell beside the sentence or glued from it with MyST-NB (``{glue:text}`name```).
This check reads every markdown cell of ``notebooks/*.ipynb``, blanks out what may hold numbers
legitimately -- maths (``$...$``, ``$$...$$``), inline code and code fences, MyST roles
(``{cite}`...```, ``{glue:text}`...```), link targets, admonition options -- and the passages of
the allow-list, and reports every remaining number that looks like a figure: a decimal, a
percentage, a ratio ("1.5x", "2×") or a count with a unit of measurement (s, ms, nats, bits,
MB, ...). Hyperparameters and definitions belong in maths or code, or on the allow-list
(``scripts/typed_figures_allow.txt``: one line ``<notebook prefix> | <exact passage>``).

    python scripts/check_typed_figures.py            # exit 1 and a list when any figure is typed
    python scripts/check_typed_figures.py --count    # one count per notebook
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOW = Path(__file__).with_name("typed_figures_allow.txt")

# What may legitimately hold numbers, blanked before the search (order matters: fences first).
_SHIELDS = [
    re.compile(r"```.*?```", re.S),  # code fences and MyST directives written with backticks
    re.compile(r":::.*?$", re.M),  # the opening line of a colon fence ({admonition} Solution 1)
    re.compile(r"^:\w[\w-]*:.*$", re.M),  # directive options (:class: dropdown)
    re.compile(r"\$\$.*?\$\$", re.S),  # display maths
    re.compile(r"(?<!\\)\$[^$\n]+?(?<!\\)\$"),  # inline maths
    re.compile(r"\{[\w:-]+\}`[^`]*`"),  # roles: {cite}`...`, {glue:text}`...`, {numref}`...`
    re.compile(r"`[^`\n]*`"),  # inline code
    re.compile(r"\]\([^)]*\)"),  # link targets
    re.compile(r"^#+ .*$", re.M),  # headings ("## 08 · ...", "### Step 2")
]

_UNITS = (
    r"s|ms|µs|us|ns|seconds?|minutes?|min|hours?|h|nats?|bits?|bpc|dB|Hz|kHz|[KMGT]i?B|"
    r"GFLOP/s|TFLOP/s|FLOPs?|it/s|steps?/s|tokens?/s|images?/s|samples?/s"
)
_FIGURE = re.compile(
    r"(?<![\w.\-/])(?P<number>\d[\d,]*(?:\.\d+)?|\.\d+)"
    rf"(?P<suffix>\s?%|\s?[×x](?!\w)|\s?(?:{_UNITS})(?![\w/]))?"
)


def _is_figure(match: re.Match) -> bool:
    """A decimal, or any number with a percent sign, a ratio sign or a unit after it."""
    return "." in match.group("number") or match.group("suffix") is not None


def load_allow_list(path: Path = ALLOW) -> list[tuple[str, str]]:
    """Read ``<notebook prefix> | <passage>`` lines; ``#`` starts a comment, ``*`` any notebook."""
    entries = []
    if not path.exists():
        return entries
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        prefix, sep, passage = line.partition(" | ")
        if not sep or not passage:
            raise SystemExit(
                f"{path.name}:{number}: expected '<notebook prefix> | <passage>', got {line!r}"
            )
        entries.append((prefix.strip(), passage))
    return entries


def _blank(text: str, pattern: re.Pattern | str) -> str:
    if isinstance(pattern, str):
        return text.replace(pattern, " " * len(pattern))
    return pattern.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def typed_figures(notebook: Path, allow: list[tuple[str, str]]) -> list[tuple[int, str, str]]:
    """Return ``(cell index, figure, context)`` for each figure typed in a notebook's markdown."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    passages = [p for prefix, p in allow if prefix == "*" or notebook.name.startswith(prefix)]
    found = []
    for index, cell in enumerate(cells):
        if cell["cell_type"] != "markdown":
            continue
        source = "".join(cell["source"])
        text = source
        for passage in passages:
            text = _blank(text, passage)
        for shield in _SHIELDS:
            text = _blank(text, shield)
        for match in filter(_is_figure, _FIGURE.finditer(text)):
            start, end = match.span()
            context = source[max(0, start - 40) : end + 25].replace("\n", " ")
            found.append((index, match.group(0).strip(), context))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    parser.add_argument("--count", action="store_true", help="print one count per notebook")
    parser.add_argument(
        "--debt",
        type=Path,
        default=None,
        help="a JSON {notebook: count} of typed figures not yet fixed: fail only above it",
    )
    args = parser.parse_args(argv)
    debt = json.loads(args.debt.read_text(encoding="utf-8")) if args.debt else {}
    allow = load_allow_list()
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    counts: Counter[str] = Counter()
    for path in paths:
        for index, figure, context in typed_figures(path, allow):
            counts[path.name] += 1
            if not args.count:
                print(f"{path.name} cell {index}: {figure!r} in ...{context}...")
    if args.count:
        for name in sorted(counts):
            print(f"{counts[name]:4d}  {name}")
    over = {name: n for name, n in counts.items() if n > debt.get(name, 0)}
    if debt:
        for name, n in sorted(counts.items()):
            print(f"{name}: {n} typed figure(s), {debt.get(name, 0)} recorded as not yet fixed")
        counts = over
    total = sum(counts.values())
    if total:
        print(
            f"{total} typed figure(s): print or glue each from the cell that measures it, or, "
            f"for a hyperparameter, write it as maths or code or add it to {ALLOW.name}",
            file=sys.stderr,
        )
    return 1 if total else 0


if __name__ == "__main__":
    raise SystemExit(main())
