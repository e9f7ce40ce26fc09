"""Data-parallel training under ``torchrun``, checked: identical replicas, files written once.

:func:`bench_ddp` launches :mod:`genai_course.bench.rank_report` in several processes; each
writes a report of what its rank trained and wrote, and the result compares them.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .timing import check_positive, header


def param_digest(module: nn.Module, *, buffers: bool = False) -> str:
    """SHA-256 of a module's parameters (or, with ``buffers``, its buffers): names, dtypes,
    shapes and bytes, in registration order.  Equal digests mean bitwise-equal weights."""
    h = hashlib.sha256()
    items = module.named_buffers() if buffers else module.named_parameters()
    for name, t in items:
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def free_port() -> int:
    """A TCP port on localhost that is free now (for torchrun's ``--master_port``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: The variables torchrun sets for its workers, dropped from the environment it is launched with.
LAUNCH_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def bench_ddp(
    *,
    model: str = "classifier",
    profile: str = "smoke",
    nproc: int = 2,
    threads: int = 1,
    folder: str | Path | None = None,
    port: int | None = None,
    device: str = "auto",
    timeout: float = 300,
) -> dict[str, Any]:
    """Train recipe ``model`` as ``genai-course train`` does, in ``nproc`` processes under
    ``torchrun``, and check the run: every rank ends with bitwise-identical parameters, and
    rank 0 alone writes the checkpoint, the ``.safetensors`` file and the manifest, once each.

    The processes run :mod:`genai_course.bench.rank_report` (``python -m
    genai_course.bench.rank_report FOLDER/ranks MODEL --profile PROFILE --out FOLDER/out
    --checkpoint-dir FOLDER/checkpoints``): the recipe with the options ``genai-course train``
    gives it, plus a callback that records, on each rank, the files it wrote and the digests
    (:func:`param_digest`) of its model's parameters and buffers.  ``writes`` maps each file
    (relative to ``FOLDER``) to the ranks that wrote it, one entry per write.  Backend: nccl
    with one GPU per process when there are ``nproc`` GPUs (and ``device`` allows), else gloo
    on the CPU with ``threads`` threads per process.  ``command`` is the plain ``torchrun``
    command line of the same run; ``result`` is the JSON line rank 0 printed.  Without
    ``folder`` a temporary one is used and removed.  Raises RuntimeError, with the end of the
    processes' output, if the run fails.
    """
    check_positive(nproc=nproc, threads=threads)
    if folder is None:
        with tempfile.TemporaryDirectory(prefix="genai-ddp-") as tmp:
            return bench_ddp(
                model=model,
                profile=profile,
                nproc=nproc,
                threads=threads,
                folder=tmp,
                port=port,
                device=device,
                timeout=timeout,
            )
    use_cuda = (
        device in ("auto", "cuda")
        and torch.cuda.is_available()
        and torch.cuda.device_count() >= nproc
    )
    folder = Path(folder).resolve()
    out_dir, ckpt_dir, ranks_dir = folder / "out", folder / "checkpoints", folder / "ranks"
    port = port or free_port()
    train_args = ["train", model, "--profile", profile, "--out", str(out_dir)]
    train_args += ["--checkpoint-dir", str(ckpt_dir), "--no-progress"]
    train_args += [] if use_cuda else ["--device", "cpu"]
    launcher = [f"--nproc_per_node={nproc}", f"--master_port={port}"]
    cmd = [sys.executable, "-m", "torch.distributed.run", *launcher]
    cmd += ["-m", "genai_course.bench.rank_report", str(ranks_dir), *train_args[1:]]
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise RuntimeError(f"torchrun exited with {proc.returncode}:\n{tail}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    reports = [json.loads(p.read_text()) for p in sorted(ranks_dir.glob("rank-*.json"))]
    if len(reports) != nproc:
        raise RuntimeError(f"expected {nproc} rank reports in {ranks_dir}, found {len(reports)}")
    params = [[t["params"] for t in r["trainers"]] for r in reports]
    bufs = [[t["buffers"] for t in r["trainers"]] for r in reports]
    writes: dict[str, list[int]] = {}
    for r in reports:
        for path in r["written"]:
            writes.setdefault(str(Path(path).relative_to(folder)), []).append(r["rank"])
    from ..pretrained import read_manifest

    def names(d: Path) -> list[str]:
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []

    return {
        **header("ddp", torch.device("cuda" if use_cuda else "cpu")),
        "model": model,
        "profile": profile,
        "nproc": nproc,
        "backend": "nccl" if use_cuda else "gloo",
        "threads_per_process": threads,
        "command": " ".join(["torchrun", *launcher, "-m", "genai_course.cli", *train_args]),
        "seconds": round(seconds, 2),
        "world_sizes": [r["world_size"] for r in reports],
        "steps": [[t["step"] for t in r["trainers"]] for r in reports],
        "replicas_identical": all(p == params[0] for p in params),
        "buffers_identical": all(b == bufs[0] for b in bufs),
        "param_digests": [[d[:16] for d in p] for p in params],
        "writes": dict(sorted(writes.items())),
        "written_once_by_rank0": bool(writes) and all(w == [0] for w in writes.values()),
        "files": {"out": names(out_dir), "checkpoints": names(ckpt_dir)},
        "manifest_entries": sorted(read_manifest(out_dir)),
        "result": json.loads(lines[-1]) if lines else None,
        "stdout": proc.stdout[-2000:],
        "stderr": proc.stderr[-2000:],
    }


def summarise_ddp(result: dict[str, Any]) -> str:
    """One line: the processes, and whether the replicas and the writes were as they should."""
    return (
        f"{result['nproc']} processes ({result['backend']}) in {result['seconds']:.1f} s: "
        f"replicas identical {result['replicas_identical']}, files written once by rank 0 "
        f"{result['written_once_by_rank0']} ({', '.join(result['writes'])})"
    )
