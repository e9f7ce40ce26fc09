"""Execute the book's notebooks into a copy of its sources, re-running only what changed.

``make notebooks`` (and so ``make book`` and ``make test``) calls this. It copies ``_config.yml``,
``_toc.yml`` and ``book/`` to the output folder, then executes each notebook of ``notebooks/``
there with nbmake (``pytest --nbmake --overwrite``), keeping the outputs for the site. A notebook
is executed again only when its key changed since its last successful execution: the SHA-256 of
the notebook's source, of every file of the package ``genai_course/`` and of ``pyproject.toml``.
Each chapter is printed as it starts and with its time and its slowest cell when it ends, with
the running total. Deleting the output folder (``make clean``) forces every notebook to run; a
fresh clone has none.

``--jobs N`` runs N notebooks at a time (default one), each kernel with the cores shared out
(``OMP_NUM_THREADS``). On 2 cores it gained little here: chapters 08 + 13 took 165 s side by
side against 175 s in turn, and chapter 13 alone went from 106 s to 165 s.

    python scripts/execute_notebooks.py --out executed --timeout 300 --jobs 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import datetime
from pathlib import Path
from threading import Lock

ROOT = Path(__file__).resolve().parent.parent
STAMPS = ".executed.json"  # {notebook file name: key of its last successful execution}
_PRINT = Lock()


def say(text: str) -> None:
    """Print one whole line at a time: notebooks run side by side in threads."""
    with _PRINT:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def package_key(root: Path = ROOT) -> str:
    """SHA-256 over the package's files (names and bytes, caches skipped) and pyproject.toml."""
    digest = hashlib.sha256()
    files = [p for p in sorted((root / "genai_course").rglob("*")) if p.is_file()]
    files = [p for p in files if "__pycache__" not in p.parts and p.suffix != ".pyc"]
    for path in [*files, root / "pyproject.toml"]:
        digest.update(str(path.relative_to(root)).encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def notebook_key(notebook: Path, package: str, timeout: int) -> str:
    """The key an executed copy must carry to be reused: source, package and cell time limit."""
    digest = hashlib.sha256(notebook.read_bytes())
    digest.update(f"{package} timeout={timeout}".encode())
    return digest.hexdigest()


def _read_stamps(path: Path) -> dict[str, str]:
    try:
        stamps = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return stamps if isinstance(stamps, dict) else {}


def _write_stamps(path: Path, stamps: dict[str, str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(stamps, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # atomic: an interrupted build never leaves a half-written record


def _copy_sources(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(ROOT / name, out / name)
    shutil.rmtree(out / "book", ignore_errors=True)
    shutil.copytree(ROOT / "book", out / "book")
    (out / "notebooks").mkdir(exist_ok=True)


def slowest_cell(executed: Path) -> tuple[int, float] | None:
    """(index, seconds) of the executed notebook's slowest code cell, from nbclient's timings."""
    try:
        cells = json.loads(executed.read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError):
        return None
    slowest = None
    for index, cell in enumerate(cells):
        timing = cell.get("metadata", {}).get("execution", {})
        began, ended = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
        if cell.get("cell_type") != "code" or not (began and ended):
            continue
        seconds = (datetime.fromisoformat(ended) - datetime.fromisoformat(began)).total_seconds()
        if slowest is None or seconds > slowest[1]:
            slowest = (index, seconds)
    return slowest


def _execute(
    notebook: Path, out: Path, timeout: int, threads: int | None = None
) -> tuple[bool, str]:
    target = out / "notebooks" / notebook.name
    shutil.copy2(notebook, target)
    command = [
        sys.executable, "-m", "pytest", "--nbmake", "--overwrite",
        f"--nbmake-timeout={timeout}", "-p", "no:cacheprovider", "-q",
        str(target.relative_to(out)),
    ]  # fmt: skip
    env = dict(os.environ)
    if threads is not None:  # torch's intra-op pool reads these when the kernel imports it
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    result = subprocess.run(command, cwd=out, capture_output=True, text=True, env=env)
    return result.returncode == 0, result.stdout + result.stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    parser.add_argument("--out", type=Path, default=ROOT / "executed", help="the executed copy")
    parser.add_argument("--timeout", type=int, default=300, help="nbmake's limit per cell, s")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="notebooks executed at a time, the cores' threads shared out among them",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs expects a positive number of notebooks at a time, got {args.jobs}")
    notebooks = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    for notebook in notebooks:
        if notebook.suffix != ".ipynb" or not notebook.is_file():
            parser.error(f"expected notebook files (*.ipynb), got {notebook}")
    out = args.out.resolve()
    _copy_sources(out)
    stamps_path = out / STAMPS
    stamps = _read_stamps(stamps_path)
    package = package_key()
    if not args.notebooks:  # chapters deleted from notebooks/ leave the executed copy too
        names = {nb.name for nb in notebooks}
        for stale in (out / "notebooks").glob("*.ipynb"):
            if stale.name not in names:
                stale.unlink()
                stamps.pop(stale.name, None)

    start, executed, reused, failed = time.monotonic(), [], [], []
    width = len(str(len(notebooks)))
    tags = {nb: f"[{i:{width}d}/{len(notebooks)}] {nb.stem}" for i, nb in enumerate(notebooks, 1)}
    todo = []
    for notebook in notebooks:
        if (
            stamps.get(notebook.name) == notebook_key(notebook, package, args.timeout)
            and (out / "notebooks" / notebook.name).exists()
        ):
            reused.append(notebook.name)
            say(f"{tags[notebook]}: unchanged, executed copy reused")
        else:
            todo.append(notebook)
    jobs = min(args.jobs, max(1, len(todo)))
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None

    def run(notebook: Path) -> tuple[Path, bool, str, float, str]:
        say(f"{tags[notebook]}: executing ...")
        began = time.monotonic()
        # keyed when it is copied, not when the build started: a chapter edited while earlier
        # ones ran is recorded with the source that was actually executed
        key = notebook_key(notebook, package, args.timeout)
        ok, log = _execute(notebook, out, args.timeout, threads)
        return notebook, ok, log, time.monotonic() - began, key

    with ThreadPoolExecutor(max_workers=jobs) as pool:  # results in the order they finish
        for future in as_completed([pool.submit(run, notebook) for notebook in todo]):
            notebook, ok, log, seconds, key = future.result()
            tag, total = tags[notebook], time.monotonic() - start
            if ok:
                stamps[notebook.name] = key
                executed.append(notebook.name)
                cell = slowest_cell(out / "notebooks" / notebook.name)
                slow = f", slowest cell {cell[0]}: {cell[1]:.0f} s" if cell else ""
                say(f"{tag}: done in {seconds:.0f} s{slow} (total {total:.0f} s)")
            else:
                stamps.pop(notebook.name, None)
                failed.append(notebook.name)
                say(f"{tag}: FAILED after {seconds:.0f} s (total {total:.0f} s)\n{log[-6000:]}")
            _write_stamps(stamps_path, stamps)

    total = time.monotonic() - start
    print(
        f"notebooks: {len(executed)} executed, {len(reused)} reused, {len(failed)} failed "
        f"in {total:.0f} s; executed copies in {out}",
        flush=True,
    )
    if reused:
        print("reused (source and package unchanged): " + ", ".join(reused))
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
