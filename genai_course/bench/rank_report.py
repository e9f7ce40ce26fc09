"""The process :func:`~genai_course.bench.ddp.bench_ddp` runs on every rank under ``torchrun``.

``python -m genai_course.bench.rank_report DIR MODEL [--profile P] [--out O] ...`` trains recipe
``MODEL`` with the options of ``genai-course train MODEL ...`` (the same :class:`RunOptions`,
the same JSON line printed by rank 0), with a :class:`RunRecorder` among the run's callbacks,
and then writes ``DIR/rank-R.json``: this rank's number, the world size, the files it wrote and,
for each Trainer that trained, the step it reached and the digests of its model's parameters and
buffers.  Nothing is patched: the Trainer tells the callback of its checkpoints, and the run's
options list the files its recipe shipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..budget import PROFILES, current_profile
from ..train import Callback, Trainer, distributed_env
from .ddp import param_digest


class RunRecorder(Callback):
    """Records each Trainer as its ``fit`` starts and each checkpoint file it writes."""

    def __init__(self) -> None:
        self.trainers: list[Trainer] = []
        self.checkpoints: list[Path] = []

    def on_train_start(self, trainer: Trainer) -> None:
        self.trainers.append(trainer)

    def on_checkpoint(self, trainer: Trainer, path: Path) -> None:
        self.checkpoints.append(Path(path).resolve())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m genai_course.bench.rank_report",
        description="train a recipe as `genai-course train` does and report this rank's run",
    )
    p.add_argument("report_dir", help="folder for rank-R.json")
    p.add_argument("model", help="the recipe, as for genai-course train")
    p.add_argument("--profile", choices=PROFILES, default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    p.add_argument("--checkpoint-dir", default=None)
    p.add_argument("--checkpoint-every", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    return p


def report(trainers: list[Trainer], written: list[Path]) -> dict[str, Any]:
    """This rank's report: rank, world size, the files written (absolute paths) and, per
    Trainer that trained, its step and the SHA-256 digests of its parameters and buffers."""
    rank, _, world = distributed_env()
    return {
        "rank": rank,
        "world_size": world,
        "written": [str(Path(p).resolve()) for p in written],
        "trainers": [
            {
                "step": t.step,
                "params": param_digest(t.model),
                "buffers": param_digest(t.model, buffers=True),
            }
            for t in trainers
        ],
    }


def main(argv: list[str] | None = None) -> int:
    """Run the recipe, print rank 0's JSON line, write ``DIR/rank-R.json``; return 0."""
    from ..recipes import RECIPES, RunOptions

    args = _parser().parse_args(argv)
    if args.model not in RECIPES:
        raise SystemExit(f"unknown recipe {args.model!r}; known: {sorted(RECIPES)}")
    profile = args.profile or current_profile()
    recorder = RunRecorder()
    opts = RunOptions(
        profile=profile,
        out=args.out,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        progress=not args.no_progress,
        checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=args.checkpoint_every,
        callbacks=[recorder],
    )
    metrics = RECIPES[args.model].train(opts)
    rank = distributed_env()[0]
    if rank == 0:
        print(json.dumps({"model": args.model, "profile": profile, **metrics}), flush=True)
    folder = Path(args.report_dir)
    folder.mkdir(parents=True, exist_ok=True)
    result = report(recorder.trainers, [*recorder.checkpoints, *opts.written])
    (folder / f"rank-{rank}.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
