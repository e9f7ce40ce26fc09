"""``make gpu-check``: the course's GPU path verified in one run, its figures in one JSON file.

``python -m genai_course.bench.gpu_check --out gpu-check.json`` runs, on a machine with CUDA,
each part below in its own process with its own time box, inside a total budget (default
450 s, so the whole check ends within 8 minutes):

- ``precision``: a training step of the U-Net and of the GPT (``full`` sizes) in fp32, with
  bf16 and fp16 autocast and channels-last; their model FLOPs utilisation is gathered under
  ``"mfu"``;
- ``optimizer``: AdamW for-loop, foreach and fused;
- ``dataloading``: batches already on the device against a DataLoader in host memory;
- ``train-classifier``, ``train-gpt``: the ``classifier`` and ``gpt-pydocs`` recipes with the
  ``full`` profile, their training cut after 30 s, with the time per step;
- ``compile``: fp32, bf16 and compiled bf16 steps, with the first (compiling) step's time;
- ``chapter``: one chapter (default ``09_gpt``) executed with ``GENAI_COURSE_PROFILE=full``
  cell by cell in a temporary folder, timed, stopped at its time box.

A part that fails or runs past its box is recorded (its error, the end of its output) and the
next one runs; the file is rewritten after every part, so an interrupted check keeps what it
measured.  On a machine without CUDA the check refuses (exit code 2) unless ``--tiny`` asks
for every part at its smallest size, which runs on the CPU in about a minute and is what the
unit tests run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ..budget import PROFILE_ENV, resolve_device
from ..train import Callback, Trainer
from .timing import device_name, sync

#: The check's total budget in seconds: the parts' time boxes are cut to what is left of it.
BUDGET_S = 450.0
DEFAULT_CHAPTER = "09_gpt"
_ROOT = Path(__file__).resolve().parents[2]  # the checkout: notebooks/ lives beside the package


class CudaRequired(RuntimeError):
    """The GPU check was asked for on a machine without CUDA."""


# ----------------------------------------------------------------------------------------------
# timing a recipe's training steps


class StepTimer(Callback):
    """Times the training steps of each run it is given to and, with ``seconds``, ends the run
    once it has trained that long (the Trainer's early-stopping flag, so the recipe then
    evaluates and finishes as after early stopping).

    The clock starts after ``skip`` warm-up steps and stops at the end of training, the device
    synchronised both times; ``ms_per_step`` is the wall time per step in between, validation
    and logging included, as a real run spends it.
    """

    def __init__(self, seconds: float | None = None, skip: int = 2):
        if seconds is not None and seconds <= 0:
            raise ValueError(f"seconds must be > 0 or None, got {seconds}")
        if skip < 0:
            raise ValueError(f"skip must be >= 0, got {skip}")
        self.seconds, self.skip = seconds, skip
        self.runs: list[dict[str, Any]] = []

    def on_train_start(self, trainer: Trainer) -> None:
        self._began, self._first = time.perf_counter(), trainer.step
        self._t0: float | None = None
        self._s0 = trainer.step
        if self.skip == 0:
            sync(trainer.device)
            self._t0 = time.perf_counter()

    def on_step_end(self, trainer: Trainer) -> None:
        if self._t0 is None and trainer.step - self._first >= self.skip:
            sync(trainer.device)
            self._t0, self._s0 = time.perf_counter(), trainer.step
        over = self.seconds is not None and time.perf_counter() - self._began >= self.seconds
        if over and trainer.stop_reason is None and trainer.step < trainer.config.steps:
            trainer.stop_reason = f"gpu-check time box of {self.seconds:g} s"

    def on_train_end(self, trainer: Trainer) -> None:
        sync(trainer.device)
        end = time.perf_counter()
        timed = trainer.step - self._s0 if self._t0 is not None else 0
        self.runs.append(
            {
                "steps": trainer.step - self._first,
                "planned_steps": trainer.config.steps,
                "time_boxed": (trainer.stop_reason or "").startswith("gpu-check"),
                "train_seconds": round(end - self._began, 2),
                "steps_timed": timed,
                "ms_per_step": round((end - self._t0) / timed * 1e3, 3) if timed else None,
                "batch_size": trainer.config.batch_size,
                "precision": trainer.precision,
                "device": str(trainer.device),
            }
        )


# ----------------------------------------------------------------------------------------------
# the parts: each returns {"figures": the few numbers worth a table, "result": everything}


def _rows(result: dict[str, Any], *keys: str) -> dict[str, dict[str, Any]]:
    """``{model: {variant: {key: value}}}`` from a precision result's rows."""
    out: dict[str, dict[str, Any]] = {}
    for r in result["results"]:
        out.setdefault(r["model"], {})[r["variant"]] = {k: r.get(k) for k in keys}
    return out


def part_precision(device: str, tiny: bool) -> dict[str, Any]:
    """fp32, bf16 and fp16 autocast and channels-last steps of the U-Net and the GPT."""
    from .precision import bench_precision

    variants = ("fp32", "bf16", "fp16", "channels_last", "channels_last+bf16")
    if tiny:
        sizes = dict(profile="smoke", unet_batch=2, gpt_batch=2, steps=1, repeats=1)
    else:
        sizes = dict(profile="full", steps=5, repeats=3, warmup=2)
    r = bench_precision(variants=variants, device=device, **sizes)
    keys = ("ms_per_step", "speedup", "tflops", "mfu", "throughput", "throughput_unit")
    return {"figures": {"choice": r["choice"], **_rows(r, *keys)}, "result": r}


def part_compile(device: str, tiny: bool) -> dict[str, Any]:
    """Eager fp32 and bf16 steps against the compiled bf16 step (fp32 where tiny, on a CPU)."""
    from .precision import bench_precision

    if tiny:
        sizes = dict(models=("gpt",), profile="smoke", gpt_batch=2, steps=1, repeats=1)
        variants: tuple[str, ...] = ("fp32", "compile")
    else:
        sizes = dict(profile="full", steps=5, repeats=3, warmup=2)
        variants = ("fp32", "bf16", "compile+bf16")
    r = bench_precision(variants=variants, device=device, **sizes)
    keys = ("ms_per_step", "speedup", "first_step_s", "mfu")
    return {"figures": _rows(r, *keys), "result": r}


def part_optimizer(device: str, tiny: bool) -> dict[str, Any]:
    """AdamW for-loop, foreach and fused over the U-Net's and the GPT's parameters."""
    from .optimizer import bench_optimizer

    sizes = dict(profile="smoke", steps=2, repeats=1) if tiny else dict(profile="full", repeats=3)
    r = bench_optimizer(device=device, **sizes)
    figures: dict[str, Any] = {}
    for row in r["results"]:
        kept = ("ms_per_step", "speedup") if row["supported"] else ("reason",)
        figures.setdefault(row["model"], {})[row["impl"]] = {k: row[k] for k in kept}
    return {"figures": figures, "result": r}


def part_dataloading(device: str, tiny: bool) -> dict[str, Any]:
    """Batches per second from tensors on the device and from a DataLoader."""
    from .dataloading import bench_dataloading

    sizes = dict(batch_size=32, batches=5, repeats=1, workers=(0,)) if tiny else {}
    r = bench_dataloading(device=device, **sizes)
    figures = {
        row["loader"]: {
            "batches_per_s": row["batches_per_s"],
            "times_slower": row["times_slower_than_tensorloader"],
        }
        for row in r["results"]
    }
    return {"figures": figures, "result": r}


def _train_recipe(recipe: str, device: str, tiny: bool, seconds: float) -> dict[str, Any]:
    from ..recipes import RECIPES, RunOptions

    timer = StepTimer(seconds=None if tiny else seconds)
    opts = RunOptions(
        profile="smoke" if tiny else "full",
        device=device,
        progress=False,
        callbacks=[timer],
    )
    metrics = RECIPES[recipe].train(opts)
    runs = timer.runs
    return {
        "figures": {"recipe": recipe, "profile": opts.profile, **(runs[-1] if runs else {})},
        "result": {"runs": runs, "metrics": metrics},
    }


def part_train_classifier(device: str, tiny: bool) -> dict[str, Any]:
    """The ``classifier`` recipe, ``full`` profile, training cut after 30 s."""
    return _train_recipe("classifier", device, tiny, seconds=30)


def part_train_gpt(device: str, tiny: bool) -> dict[str, Any]:
    """The ``gpt-pydocs`` recipe, ``full`` profile, training cut after 30 s."""
    return _train_recipe("gpt-pydocs", device, tiny, seconds=30)


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables inside the block (the kernel started there inherits them)."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _tiny_notebook(folder: Path) -> Path:
    """A two-cell notebook that checks the profile reached the kernel (for ``--tiny``)."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(f"import os\nprofile = os.environ[{PROFILE_ENV!r}]"),
        nbformat.v4.new_code_cell(
            "from genai_course.budget import current_profile\n"
            "assert current_profile() == profile\nprint(profile)"
        ),
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path = folder / "tiny.ipynb"
    nbformat.write(nb, path)
    return path


def execute_notebook(
    notebook: str | Path,
    *,
    profile: str,
    seconds: float,
    folder: str | Path,
    keep: str | Path | None = None,
) -> dict[str, Any]:
    """Execute ``notebook`` with ``GENAI_COURSE_PROFILE=profile`` in ``folder``, cell by cell,
    stopping before the next cell once ``seconds`` have passed (a running cell is given the
    time left).  Returns the seconds in all (kernel start included), the code cells run and
    their number, the slowest cell and whether the notebook ran to its end; with ``keep`` the
    executed notebook is written there.  A cell's error propagates (nbclient's
    ``CellExecutionError``)."""
    import nbformat
    from nbclient import NotebookClient

    notebook = Path(notebook)
    if not notebook.is_file():
        raise FileNotFoundError(f"no notebook at {notebook}")
    nb = nbformat.read(notebook, as_version=4)
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    start = time.perf_counter()
    deadline = start + seconds
    times: list[tuple[int, float]] = []
    client = NotebookClient(
        nb, timeout=max(1, int(seconds)), resources={"metadata": {"path": str(folder)}}
    )
    with _environment(**{PROFILE_ENV: profile}), client.setup_kernel():
        for i in code:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            client.timeout = max(1, int(left))
            began = time.perf_counter()
            client.execute_cell(nb.cells[i], i)
            times.append((i, time.perf_counter() - began))
    if keep is not None:
        nbformat.write(nb, keep)
    slowest = max(times, key=lambda t: t[1], default=(None, 0.0))
    return {
        "notebook": notebook.name,
        "profile": profile,
        "seconds": round(time.perf_counter() - start, 2),
        "code_cells": len(code),
        "cells_run": len(times),
        "completed": len(times) == len(code),
        "slowest_cell": {"index": slowest[0], "seconds": round(slowest[1], 2)},
    }


def part_chapter(
    device: str,
    tiny: bool,
    notebook: str | Path | None = None,
    seconds: float = 180,
    keep: str | Path | None = None,
) -> dict[str, Any]:
    """A chapter executed with the ``full`` profile (``--tiny``: a two-cell notebook, smoke)."""
    with tempfile.TemporaryDirectory(prefix="genai-gpu-check-") as tmp:
        if notebook is None:
            notebook = _tiny_notebook(Path(tmp)) if tiny else _chapter_path(DEFAULT_CHAPTER)
        r = execute_notebook(
            notebook, profile="smoke" if tiny else "full", seconds=seconds, folder=tmp, keep=keep
        )
    return {"figures": {k: r[k] for k in ("notebook", "seconds", "completed")}, "result": r}


def _chapter_path(stem: str) -> Path:
    path = _ROOT / "notebooks" / f"{stem}.ipynb"
    if not path.is_file():
        raise FileNotFoundError(f"no chapter {stem!r} at {path}: pass --notebook PATH")
    return path


@dataclass(frozen=True)
class Part:
    """One part of the check: ``run(device, tiny) -> {"figures", "result"}`` and its time box
    in seconds (cut to what is left of the total budget)."""

    name: str
    run: Callable[..., dict[str, Any]]
    box_s: float


#: The parts, in the order they run: the cheap benchmarks first, compilation and the chapter
#: (the least predictable) last.
PARTS: dict[str, Part] = {
    p.name: p
    for p in (
        Part("precision", part_precision, 75),
        Part("optimizer", part_optimizer, 45),
        Part("dataloading", part_dataloading, 45),
        Part("train-classifier", part_train_classifier, 75),
        Part("train-gpt", part_train_gpt, 90),
        Part("compile", part_compile, 90),
        Part("chapter", part_chapter, 180),
    )
}

_MIN_BOX_S = 20  # a part with less time left than this is skipped, not started


# ----------------------------------------------------------------------------------------------
# running the parts and writing the file


def _run_in_process(part: Part, device: str, tiny: bool, box: float, **extra: Any) -> dict:
    start = time.perf_counter()
    try:
        out = part.run(device, tiny, **extra)
        error = None
    except Exception as err:  # recorded, and the next part runs
        out, error = {}, "".join(traceback.format_exception_only(err)).strip()[-2000:]
    seconds = time.perf_counter() - start
    return {**out, "ok": error is None, "error": error, "seconds": round(seconds, 2)}


def _run_in_child(part: Part, device: str, tiny: bool, box: float, **extra: Any) -> dict:
    """Run ``part`` in a fresh process (its own CUDA context, its own failures), killed with
    everything it started once ``box`` seconds have passed."""
    with tempfile.TemporaryDirectory(prefix="genai-gpu-part-") as tmp:
        result_file = Path(tmp) / "part.json"
        cmd = [sys.executable, "-m", "genai_course.bench.gpu_check", "--part", part.name]
        cmd += ["--part-out", str(result_file), "--device", device]
        cmd += ["--tiny"] if tiny else []
        if part.name == "chapter":
            cmd += ["--chapter-seconds", str(max(1.0, box - 15))]  # leave time to shut down
            for key in ("notebook", "keep"):
                if extra.get(key) is not None:
                    cmd += [f"--{key}", str(extra[key])]
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        try:
            output, _ = proc.communicate(timeout=box)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the part and any kernel or worker it started
            output, _ = proc.communicate()
            timed_out = True
        seconds = round(time.perf_counter() - start, 2)
        tail = (output or "")[-2000:]
        if timed_out:
            return {
                "ok": False,
                "error": f"time box of {box:g} s",
                "seconds": seconds,
                "log": tail,
            }
        if proc.returncode != 0 or not result_file.is_file():
            error = f"exited with {proc.returncode}"
            return {"ok": False, "error": error, "seconds": seconds, "log": tail}
        out = json.loads(result_file.read_text())
        return {**out, "seconds": seconds}


def mfu_table(parts: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{model: {variant: mfu}}`` from the precision and compile parts that ran (None where the
    GPU's peak is unknown, as on every CPU)."""
    table: dict[str, dict[str, Any]] = {}
    for name in ("precision", "compile"):
        result = parts.get(name, {}).get("result")
        for row in (result or {}).get("results", []):
            table.setdefault(row["model"], {}).setdefault(row["variant"], row["mfu"])
    return table


def gpu_check(
    out: str | Path,
    *,
    device: str = "auto",
    tiny: bool = False,
    parts: list[str] | None = None,
    budget_s: float = BUDGET_S,
    notebook: str | Path | None = None,
    keep_notebook: str | Path | None = None,
    in_process: bool = False,
) -> dict[str, Any]:
    """Run the check's ``parts`` (default all of :data:`PARTS`, in order) and write the JSON
    file ``out`` after each; return its content.  Each part runs in its own process killed at
    its time box (``in_process=True``: in this one, the box only recorded, for tests).  Raises
    :class:`CudaRequired` on a machine without CUDA unless ``tiny``."""
    from ..checkpoint import atomic_write

    dev = resolve_device(device)
    if dev.type != "cuda" and not tiny:
        raise CudaRequired(
            f"the GPU check needs CUDA, and this machine has none (device {dev}, torch "
            f"{torch.__version__}). On a CPU, run `genai-course bench all --tiny` for the "
            "benchmarks, or `python -m genai_course.bench.gpu_check --tiny --device cpu` for "
            "this check's code at tiny sizes."
        )
    names = list(PARTS) if parts is None else list(parts)
    unknown = [n for n in names if n not in PARTS]
    if unknown:
        raise ValueError(f"unknown parts {unknown}; known: {list(PARTS)}")
    out = Path(out)
    start = time.perf_counter()
    report: dict[str, Any] = {
        "check": "gpu-check",
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": str(dev),
        "device_name": device_name(dev),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "tiny": tiny,
        "budget_s": budget_s,
        "parts": {},
    }

    def write() -> None:
        report["seconds"] = round(time.perf_counter() - start, 2)
        report["mfu"] = mfu_table(report["parts"])
        text = json.dumps(report, indent=1) + "\n"
        atomic_write(out, lambda tmp: Path(tmp).write_text(text))

    runner = _run_in_process if in_process else _run_in_child
    for name in names:
        part = PARTS[name]
        left = budget_s - (time.perf_counter() - start)
        box = min(part.box_s, left)
        if box < min(_MIN_BOX_S, part.box_s):
            report["parts"][name] = {"ok": False, "error": f"skipped: {left:.0f} s of budget left"}
            write()
            continue
        extra = {"notebook": notebook, "keep": keep_notebook} if name == "chapter" else {}
        if name == "chapter" and in_process:
            extra["seconds"] = box
        report["parts"][name] = {**runner(part, str(dev), tiny, box, **extra), "time_box_s": box}
        write()
    write()
    return report


# ----------------------------------------------------------------------------------------------
# the command


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m genai_course.bench.gpu_check",
        description="the GPU path in one run of at most 8 minutes, its figures in one JSON file",
    )
    p.add_argument("--out", default="gpu-check.json", help="the JSON file (default %(default)s)")
    p.add_argument("--device", default="auto", help="auto (default), cuda, cuda:1, ...")
    p.add_argument("--tiny", action="store_true", help="every part at its smallest size")
    p.add_argument("--parts", default=None, help=f"comma-separated, of: {','.join(PARTS)}")
    p.add_argument("--budget", type=float, default=BUDGET_S, help="total seconds (default 450)")
    p.add_argument("--notebook", default=None, help=f"the chapter (default {DEFAULT_CHAPTER})")
    p.add_argument("--keep-notebook", default=None, help="write the executed chapter here")
    # one part in this process (how the check runs each of its parts)
    p.add_argument("--part", default=None, help=argparse.SUPPRESS)
    p.add_argument("--part-out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--chapter-seconds", type=float, default=180, help=argparse.SUPPRESS)
    p.add_argument("--keep", default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit code (2 without CUDA, 1 if a part failed)."""
    args = _parser().parse_args(argv)
    if args.part is not None:  # a child: one part, its result to --part-out
        part = PARTS[args.part]
        extra = {}
        if args.part == "chapter":
            extra = {"notebook": args.notebook, "seconds": args.chapter_seconds, "keep": args.keep}
        result = {**part.run(args.device, args.tiny, **extra), "ok": True, "error": None}
        Path(args.part_out).write_text(json.dumps(result))
        return 0
    try:
        report = gpu_check(
            args.out,
            device=args.device,
            tiny=args.tiny,
            parts=None if args.parts is None else [s.strip() for s in args.parts.split(",")],
            budget_s=args.budget,
            notebook=args.notebook,
            keep_notebook=args.keep_notebook,
        )
    except CudaRequired as err:
        print(f"gpu-check: {err}", file=sys.stderr)
        return 2
    failed = [k for k, v in report["parts"].items() if not v["ok"]]
    print(f"gpu-check: {report['seconds']:.0f} s, wrote {args.out}", file=sys.stderr)
    for name, part in report["parts"].items():
        state = "ok" if part["ok"] else f"FAILED ({part['error']})"
        print(f"  {name:17s} {part.get('seconds', 0):7.1f} s  {state}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
