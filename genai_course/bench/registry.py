"""The benchmarks of ``genai-course bench NAME``, one :class:`Benchmark` record each.

A record holds everything the command needs: the function, its command-line options (flag,
type, help; the default shown is the function's own), the sizes that run it in seconds
(``--tiny``) and the one-line summary printed after its JSON line.  The command's parser is
generated from :data:`BENCHMARKS`, so a new benchmark is one new record here.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .dataloading import bench_dataloading, summarise_dataloading
from .ddp import bench_ddp, summarise_ddp
from .optimizer import bench_optimizer, summarise_optimizer
from .precision import (
    bench_batch_size,
    bench_precision,
    summarise_batch_size,
    summarise_precision,
)
from .sampling import bench_sampling, summarise_sampling
from .trainer import bench_trainer, summarise_trainer


def ints(text: str) -> tuple[int, ...]:
    """``"1,4,16"`` -> ``(1, 4, 16)``: a list option of integers."""
    return tuple(int(v) for v in text.split(","))


def names(text: str) -> tuple[str, ...]:
    """``"unet, gpt"`` -> ``("unet", "gpt")``: a list option of names."""
    return tuple(v.strip() for v in text.split(","))


@dataclass(frozen=True)
class Option:
    """One command-line option of a benchmark.

    ``flag`` is the option (``"--batch-size"``); ``dest`` the benchmark's keyword (default:
    the flag without dashes, ``-`` as ``_``); ``type`` converts the text (None for a switch);
    ``action`` is argparse's (``"store_true"``/``"store_false"`` for switches).  An option the
    user leaves out is not passed, so the benchmark's own default (or its tiny size) applies.
    """

    flag: str
    type: Callable[[str], Any] | None = int
    help: str = ""
    dest: str | None = None
    action: str | None = None
    choices: Sequence[str] | None = None

    @property
    def keyword(self) -> str:
        return self.dest or self.flag.lstrip("-").replace("-", "_")

    def add_to(self, parser: Any, fn: Callable[..., Any] | None = None) -> None:
        """Add this option to an ``argparse`` parser; with ``fn``, the help ends with the
        default of ``fn``'s keyword of the same name (where it is a value)."""
        kw: dict[str, Any] = {"dest": self.keyword, "default": None}
        if self.action is not None:
            kw["action"] = self.action
        else:
            kw["type"] = self.type
        if self.choices is not None:
            kw["choices"] = tuple(self.choices)
        text = self.help
        param = inspect.signature(fn).parameters.get(self.keyword) if fn is not None else None
        default = None if param is None else param.default
        # a switch's default is its absence; None means the benchmark picks (by device)
        if self.action is None and default not in (None, inspect.Parameter.empty):
            if isinstance(default, tuple):
                default = ",".join(map(str, default))
            text = f"{text} (default: {default})" if text else f"default: {default}"
        kw["help"] = text.replace("%", "%%")
        parser.add_argument(self.flag, **kw)


@dataclass(frozen=True)
class Benchmark:
    """A benchmark of ``genai-course bench``: ``run(**options) -> result dict``, its ``help``
    line, its ``options``, its ``tiny`` sizes and ``summary(result) -> str``."""

    name: str
    run: Callable[..., dict[str, Any]]
    help: str
    summary: Callable[[dict[str, Any]], str]
    options: tuple[Option, ...] = ()
    tiny: Mapping[str, Any] = field(default_factory=dict)


#: Options every benchmark subcommand takes (passed only to benchmarks with that keyword).
COMMON_OPTIONS = (
    Option("--device", type=str, help="auto (default), cpu, cuda, ..."),
    Option("--repeats", help="timed repeats (median)"),
)

_PROFILE = Option("--profile", type=str, help="model sizes: smoke, cpu or full")
_STEPS = Option("--steps")
_MODELS = Option("--models", type=names, help="e.g. unet,gpt")

#: The benchmarks, by name, in the order ``genai-course bench all`` runs them.
BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            "trainer",
            bench_trainer,
            "the Trainer against a raw loop",
            summarise_trainer,
            (_STEPS, Option("--batch-size")),
            dict(steps=3, batch_size=32, repeats=1),
        ),
        Benchmark(
            "precision",
            bench_precision,
            "fp32, bf16, channels_last, compile",
            summarise_precision,
            (
                _MODELS,
                Option("--variants", type=names, help="e.g. fp32,bf16,compile"),
                Option("--compile", action="store_true", help="add torch.compile"),
                Option(
                    "--no-compile-cache",
                    dest="compile_cache",
                    action="store_false",
                    help="compile from scratch, ignoring the on-disk caches of earlier runs",
                ),
                _PROFILE,
                Option("--unet-batch"),
                Option("--gpt-batch"),
                _STEPS,
            ),
            dict(profile="smoke", unet_batch=4, gpt_batch=4, steps=1, repeats=1),
        ),
        Benchmark(
            "batch-size",
            bench_batch_size,
            "throughput against batch size",
            summarise_batch_size,
            (
                Option("--models", type=names),
                Option("--batch-sizes", type=ints, help="e.g. 1,4,16,64"),
                Option("--precision", type=str, choices=("auto", "fp32", "bf16", "fp16")),
                Option("--profile", type=str),
                _STEPS,
            ),
            dict(profile="smoke", batch_sizes=(1, 4), steps=1, repeats=1),
        ),
        Benchmark(
            "optimizer",
            bench_optimizer,
            "AdamW: for-loop, foreach, fused",
            summarise_optimizer,
            (Option("--models", type=names), Option("--profile", type=str), _STEPS),
            dict(profile="smoke", steps=2, repeats=1),
        ),
        Benchmark(
            "dataloading",
            bench_dataloading,
            "TensorLoader vs DataLoader",
            summarise_dataloading,
            (
                Option("--batch-size"),
                Option("--batches"),
                Option("--workers", type=ints, help="e.g. 0,2"),
            ),
            dict(batch_size=32, batches=5, repeats=1, workers=(0,)),
        ),
        Benchmark(
            "sampling",
            bench_sampling,
            "DDPM vs DDIM; KV cache",
            summarise_sampling,
            (
                Option("--n-images"),
                Option("--ddim-steps", type=ints, help="e.g. 10,50"),
                Option("--new-tokens"),
                Option(
                    "--untrained",
                    dest="pretrained",
                    action="store_false",
                    help="fresh models of the smoke size instead of the shipped ones",
                ),
            ),
            dict(
                pretrained=False,
                timesteps=20,
                n_images=2,
                ddim_steps=(5,),
                new_tokens=8,
                repeats=1,
            ),
        ),
        Benchmark(
            "ddp",
            bench_ddp,
            "torchrun training, replicas checked",
            summarise_ddp,
            (
                Option("--model", type=str, help="the recipe"),
                Option("--profile", type=str),
                Option("--nproc"),
                Option("--folder", type=str, help="keep the run's files here (default: temporary)"),
            ),
            dict(model="classifier", profile="smoke"),
        ),
    )
}

#: ``name -> function`` of every benchmark (a view of :data:`BENCHMARKS`).
BENCHES: dict[str, Callable[..., dict[str, Any]]] = {k: b.run for k, b in BENCHMARKS.items()}

#: Sizes that run each benchmark in seconds (continuous integration, ``--tiny``).
TINY: dict[str, dict[str, Any]] = {k: dict(b.tiny) for k, b in BENCHMARKS.items()}


def run_benchmark(name: str, *, tiny: bool = False, **options: Any) -> dict[str, Any]:
    """Run benchmark ``name`` with its tiny sizes (if ``tiny``) overridden by ``options``;
    options the benchmark has no keyword for are dropped, so common ones can be passed to all."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {sorted(BENCHMARKS)}")
    fn = BENCHMARKS[name].run
    kwargs = dict(BENCHMARKS[name].tiny) if tiny else {}
    params = inspect.signature(fn).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    kwargs.update({k: v for k, v in options.items() if takes_any or k in params})
    return fn(**kwargs)


def summary(result: dict[str, Any]) -> str:
    """A one-line human summary of a benchmark's result (by its ``"bench"`` name)."""
    bench = BENCHMARKS.get(result.get("bench", ""))
    return bench.summary(result) if bench is not None else json.dumps(result)[:200]


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """``columns`` of result rows as a fixed-width text table (floats to 4 significant
    digits, None as ``-``), one line per row under a header."""

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(b[i]) for b in body]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(b, widths)) for b in body]
    return "\n".join(lines)
