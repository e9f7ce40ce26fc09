"""Benchmarks behind ``genai-course bench``; each returns a dict of JSON-ready results.

Every benchmark times real work of the course: a training step of the diffusion U-Net or of
the GPT, an optimiser step, a stream of batches, sampling, a two-process training run.  Each
result holds the device, the torch version, the number of threads, the sizes, and for every
thing timed the median over ``repeats`` and all the repeats.  Variants being compared run in
turn inside each repeat (the order alternating), so that a drift in machine load hits them
all alike; speed-ups are medians of the ratios within a repeat.

On CUDA the clock stops only after :func:`torch.cuda.synchronize`, optimisers are fused, and
the GPT's training step reports its model FLOPs utilisation (:func:`gpt_flops_per_token` over
:func:`peak_flops`).

The modules, each with one job:

- :mod:`~genai_course.bench.timing` -- clocks, interleaved repeats, the header of every result;
- :mod:`~genai_course.bench.flops` -- FLOPs of a step (analytic, counted) and GPUs' peaks;
- :mod:`~genai_course.bench.workloads` -- the U-Net and the GPT at a profile's size, and one
  AdamW training step;
- :mod:`~genai_course.bench.trainer`, :mod:`~genai_course.bench.precision`,
  :mod:`~genai_course.bench.optimizer`, :mod:`~genai_course.bench.dataloading`,
  :mod:`~genai_course.bench.sampling`, :mod:`~genai_course.bench.ddp` -- the benchmarks;
- :mod:`~genai_course.bench.registry` -- one record per benchmark (function, options, tiny
  sizes, summary), from which the command's parser is generated;
- :mod:`~genai_course.bench.rank_report` -- what each ``torchrun`` process of
  :func:`bench_ddp` runs (``python -m genai_course.bench.rank_report``);
- :mod:`~genai_course.bench.gpu_check` -- ``make gpu-check``: the GPU path verified in one
  run of at most 8 minutes, written to one JSON file.
"""

from __future__ import annotations

from .dataloading import bench_dataloading
from .ddp import bench_ddp, free_port, param_digest
from .flops import PEAK_FLOPS, count_flops, gpt_flops_per_token, peak_flops
from .optimizer import OPTIMIZER_IMPLS, bench_optimizer
from .precision import (
    PRECISION_VARIANTS,
    bench_batch_size,
    bench_precision,
    choose_precision,
    measured_precision,
)
from .registry import (
    BENCHES,
    BENCHMARKS,
    COMMON_OPTIONS,
    TINY,
    Benchmark,
    Option,
    format_table,
    run_benchmark,
    summary,
)
from .sampling import bench_sampling
from .timing import device_name
from .trainer import bench_trainer
from .workloads import GPT_VOCAB, WORKLOADS, Workload, course_workload, train_step

__all__ = [
    "BENCHES",
    "BENCHMARKS",
    "COMMON_OPTIONS",
    "GPT_VOCAB",
    "OPTIMIZER_IMPLS",
    "PEAK_FLOPS",
    "PRECISION_VARIANTS",
    "TINY",
    "WORKLOADS",
    "Benchmark",
    "Option",
    "Workload",
    "bench_batch_size",
    "bench_dataloading",
    "bench_ddp",
    "bench_optimizer",
    "bench_precision",
    "bench_sampling",
    "bench_trainer",
    "choose_precision",
    "count_flops",
    "course_workload",
    "device_name",
    "format_table",
    "free_port",
    "gpt_flops_per_token",
    "measured_precision",
    "param_digest",
    "peak_flops",
    "run_benchmark",
    "summary",
    "train_step",
]
