"""The ``genai-course`` command: train, sample, info, bench.

Examples::

    genai-course info
    genai-course train classifier --profile full --out genai_course/pretrained
    genai-course sample gmm-ring --n 2000 --out ring.png
    genai-course bench trainer
    torchrun --nproc_per_node=2 -m genai_course.cli train classifier --profile smoke --out runs/ddp
"""

from __future__ import annotations

import argparse
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
        metrics = ", ".join(
            f"{k}={v}" for k, v in manifest[name]["metrics"].items() if isinstance(v, float)
        )
        print(f"  {name:20s} {metrics}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .recipes import RECIPES, RunOptions

    recipe = RECIPES[args.model]
    profile = args.profile or current_profile()
    opts = RunOptions(
        profile=profile,
        out=args.out,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        compile=args.compile,
        progress=not args.no_progress,
        checkpoint_dir=args.checkpoint_dir,
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
    from .bench import bench_trainer

    if args.what == "trainer":
        result = bench_trainer(
            steps=args.steps, batch_size=args.batch_size, repeats=args.repeats, device=args.device
        )
        print(json.dumps(result))
        print(f"trainer/raw step-time ratio: {result['ratio']:.2f}")
    return 0


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
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("sample", help="draw samples from a shipped generative model")
    p.add_argument("model", choices=sorted(RECIPES))
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="a .png picture or a .safetensors tensor file")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("bench", help="benchmarks printing JSON and a one-line summary")
    p.add_argument("what", choices=("trainer",))
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
