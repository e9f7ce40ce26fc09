"""The ``genai-course`` command: train, sample, info, bench.

Examples::

    genai-course info
    genai-course train classifier --profile full --out genai_course/pretrained
    genai-course sample gmm-ring --n 2000 --out ring.png
    genai-course bench trainer
    genai-course bench precision --compile
    genai-course bench all --tiny
    torchrun --nproc_per_node=2 -m genai_course.cli train classifier --profile smoke --out runs/ddp
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import shutil
import sys
from pathlib import Path

import torch

from .budget import PROFILES, auto_precision, bf16_supported, current_profile, resolve_device


def _cmd_info(args: argparse.Namespace) -> int:
    from . import __version__, data
    from .pretrained import list_pretrained, read_manifest

    dev = resolve_device("auto")
    lines = {
        "genai-course": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(dev),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available",
        "bf16 autocast fast on this device": bf16_supported(dev),
        "precision 'auto' resolves to": auto_precision(dev),
        "torch.compile C compiler": shutil.which("cc") or shutil.which("gcc") or "none found",
        "threads": torch.get_num_threads(),
        "profile": f"{current_profile()} (set GENAI_COURSE_PROFILE to one of {PROFILES})",
    }
    for k, v in lines.items():
        print(f"{k:36s} {v}")
    print("\ndatasets (offline):")
    for name, desc in data.DATASETS.items():
        print(f"  {name:14s} {desc}")
    print("\npretrained checkpoints:")
    manifest = read_manifest()
    for name in list_pretrained():
        entry = manifest[name]
        metrics = ", ".join(
            f"{k}={format_metric(k, v)}"
            for k, v in entry["metrics"].items()
            if isinstance(v, float)
        )
        print(f"  {name:24s} {entry.get('notes', '')}")
        print(f"  {'':24s} {metrics}")
    return 0


def format_metric(name: str, value: float) -> str:
    """A manifest figure rounded to what it means, chosen by its name.

    Accuracies, rates, shares and AUCs to 3 decimals; FID and KID to 1 decimal, their ratios to
    the real-vs-real floor to 2; seconds to whole seconds; likelihoods (NLL, nats, bits) to 3
    significant decimals; anything else to 3 significant digits.
    """
    key = name.lower()
    if "seconds" in key:
        return f"{value:.0f} s"
    if "ratio" in key:
        return f"{value:.2f}"
    if key.startswith(("fid", "kid")):
        return f"{value:.1f}"
    if any(word in key for word in ("acc", "rate", "usage", "auc", "share")):
        return f"{value:.3f}"
    if any(word in key for word in ("nll", "nats", "bpc", "bits", "elbo")):
        return f"{value:.2f}" if abs(value) >= 10 else f"{value:.3f}"
    return f"{value:.3g}"


def _cmd_train(args: argparse.Namespace) -> int:
    from .recipes import RECIPES, RunOptions

    recipe = RECIPES[args.model]
    profile = args.profile or current_profile()
    if args.resume and args.checkpoint_dir is None:
        raise SystemExit("--resume needs --checkpoint-dir: the folder of the run to continue")
    every = args.checkpoint_every
    if every is None:
        every = 500 if args.checkpoint_dir is not None else 0
    opts = RunOptions(
        profile=profile,
        out=args.out,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        compile=args.compile,
        progress=not args.no_progress,
        checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=every,
        resume=args.resume,
    )
    metrics = recipe.train(opts)
    if int(os.environ.get("RANK", 0)) == 0:
        print(json.dumps({"model": args.model, "profile": profile, **metrics}))
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from .recipes import RECIPES

    recipe = RECIPES[args.model]
    if recipe.sample is None:
        sampleable = sorted(k for k, r in RECIPES.items() if r.sample is not None)
        print(
            f"error: {args.model!r} is not a generative model; sampleable: {sampleable}",
            file=sys.stderr,
        )
        return 2
    samples = recipe.sample(args.n, seed=args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".png":
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        if samples.ndim == 2 and samples.shape[1] == 2:
            fig, ax = plt.subplots(figsize=(4, 4))
            ax.scatter(samples[:, 0], samples[:, 1], s=2)
            ax.set_aspect("equal")
        else:
            from .viz import show_images

            ax = show_images(samples, nrow=8)
            fig = ax.figure
        fig.savefig(out, dpi=120, bbox_inches="tight")
    elif out.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({"samples": samples.contiguous()}, str(out))
    else:
        print(f"error: --out must end in .png or .safetensors, got {out.name!r}", file=sys.stderr)
        return 2
    print(
        json.dumps(
            {"model": args.model, "n": args.n, "shape": list(samples.shape), "out": str(out)}
        )
    )
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import BENCHES, TINY, summary

    names = list(BENCHES) if args.what == "all" else [args.what]
    given = {
        k: v
        for k, v in vars(args).items()
        if k not in ("command", "what", "func", "tiny") and v is not None
    }
    results = []
    for name in names:
        fn = BENCHES[name]
        kwargs = dict(TINY[name]) if args.tiny else {}
        params = inspect.signature(fn).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        kwargs.update({k: v for k, v in given.items() if takes_any or k in params})
        result = fn(**kwargs)
        print(json.dumps(result), flush=True)
        results.append(result)
    for result in results:
        print(summary(result))
    return 0


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(","))


def _add_bench_parsers(sub: argparse._SubParsersAction) -> None:
    """``genai-course bench WHAT [options]``: options left out take the benchmark's default
    (or, with ``--tiny``, its CI size)."""
    from .bench import BENCHES

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--device", default=None, help="auto (default), cpu, cuda, ...")
    common.add_argument("--tiny", action="store_true", help="CI sizes: seconds per benchmark")
    common.add_argument("--repeats", type=int, default=None, help="timed repeats (median)")

    p = sub.add_parser(
        "bench", help="benchmarks printing JSON lines, then a one-line summary of each"
    )
    what = p.add_subparsers(dest="what", required=True)
    b = what.add_parser("trainer", parents=[common], help="the Trainer against a raw loop")
    b.add_argument("--steps", type=int, default=None)
    b.add_argument("--batch-size", type=int, default=None)
    b = what.add_parser("precision", parents=[common], help="fp32, bf16, channels_last, compile")
    b.add_argument("--models", type=_names, default=None, help="e.g. unet,gpt")
    b.add_argument("--variants", type=_names, default=None, help="e.g. fp32,bf16,compile")
    b.add_argument("--compile", action="store_true", default=None, help="add torch.compile")
    b.add_argument(
        "--no-compile-cache",
        dest="compile_cache",
        action="store_false",
        default=None,
        help="compile from scratch, ignoring the on-disk caches of earlier runs",
    )
    b.add_argument("--profile", default=None, help="model sizes: smoke, cpu or full")
    b.add_argument("--unet-batch", type=int, default=None)
    b.add_argument("--gpt-batch", type=int, default=None)
    b.add_argument("--steps", type=int, default=None)
    b = what.add_parser("batch-size", parents=[common], help="throughput against batch size")
    b.add_argument("--models", type=_names, default=None)
    b.add_argument("--batch-sizes", type=_ints, default=None, help="e.g. 1,4,16,64")
    b.add_argument("--precision", default=None, choices=("auto", "fp32", "bf16"))
    b.add_argument("--profile", default=None)
    b.add_argument("--steps", type=int, default=None)
    b = what.add_parser("optimizer", parents=[common], help="AdamW: for-loop, foreach, fused")
    b.add_argument("--models", type=_names, default=None)
    b.add_argument("--profile", default=None)
    b.add_argument("--steps", type=int, default=None)
    b = what.add_parser("dataloading", parents=[common], help="TensorLoader vs DataLoader")
    b.add_argument("--batch-size", type=int, default=None)
    b.add_argument("--batches", type=int, default=None)
    b.add_argument("--workers", type=_ints, default=None, help="e.g. 0,2")
    b = what.add_parser("sampling", parents=[common], help="DDPM vs DDIM; KV cache")
    b.add_argument("--n-images", type=int, default=None)
    b.add_argument("--ddim-steps", type=_ints, default=None, help="e.g. 10,50")
    b.add_argument("--new-tokens", type=int, default=None)
    b.add_argument(
        "--untrained",
        dest="pretrained",
        action="store_false",
        default=None,
        help="fresh models of the smoke size instead of the shipped ones",
    )
    b = what.add_parser("ddp", parents=[common], help="torchrun training, replicas checked")
    b.add_argument("--model", default=None, help="the recipe (default classifier)")
    b.add_argument("--profile", default=None)
    b.add_argument("--nproc", type=int, default=None)
    b.add_argument("--folder", default=None, help="keep the run's files here (default: temporary)")
    what.add_parser("all", parents=[common], help=f"all of: {', '.join(BENCHES)}")
    p.set_defaults(func=_cmd_bench)


def build_parser() -> argparse.ArgumentParser:
    from .recipes import RECIPES

    parser = argparse.ArgumentParser(prog="genai-course", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="device, precision support, datasets and checkpoints")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("train", help="train a model with a profile's budget")
    p.add_argument("model", choices=sorted(RECIPES))
    p.add_argument(
        "--profile",
        choices=PROFILES,
        default=None,
        help="budget (default: $GENAI_COURSE_PROFILE, else full on CUDA, else cpu)",
    )
    p.add_argument("--out", default=None, help="folder for the .safetensors and manifest.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    p.add_argument("--compile", action="store_true", help="torch.compile the loss computation")
    p.add_argument("--checkpoint-dir", default=None, help="resumable trainer checkpoints here")
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        help="steps between checkpoints (default 500 with --checkpoint-dir; 0: only at the end)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from the last.pt files in --checkpoint-dir",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("sample", help="draw samples from a shipped generative model")
    p.add_argument("model", choices=sorted(RECIPES))
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="a .png picture or a .safetensors tensor file")
    p.set_defaults(func=_cmd_sample)

    _add_bench_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
