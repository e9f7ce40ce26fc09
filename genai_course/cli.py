"""The ``genai-course`` command: train, sample, info, bench.

Examples::

    genai-course info
    genai-course train classifier --profile full --out genai_course/pretrained
    genai-course sample gmm-ring --n 2000 --out ring.png
    genai-course sample diffusion-mnist --label 7 --steps 20 --out sevens.png
    genai-course sample diffusion-text-mnist --prompt "a thick seven" --out thick.png
    genai-course sample gpt-pydocs --prompt "The for statement" --out text.txt
    genai-course sample gpt-folk --n 4 --out tunes.abc --wav
    genai-course bench trainer
    genai-course bench precision --compile
    genai-course bench all --tiny
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
    opts = RunOptions(
        profile=profile,
        out=args.out,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        compile=args.compile,
        progress=not args.no_progress,
        checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
    )
    metrics = recipe.train(opts)
    if int(os.environ.get("RANK", 0)) == 0:
        print(json.dumps({"model": args.model, "profile": profile, **metrics}))
    return 0


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


_SAMPLE_SUFFIXES = {
    "digits": (".png", ".safetensors"),
    "points": (".png", ".safetensors"),
    "text": (".txt",),
    "tunes": (".abc",),
}
_SAMPLE_OPTIONS = {  # what each kind of output takes besides --n, --seed and --out
    "digits": ("label", "steps", "guidance", "prompt", "sampler", "temperature", "top_k"),
    "points": (),
    "text": ("prompt", "temperature", "top_k", "top_p", "max_new"),
    "tunes": ("prompt", "temperature", "top_k", "top_p", "max_new", "wav"),
}


def _save_picture(samples: torch.Tensor, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .checkpoint import atomic_write

    if samples.ndim == 2 and samples.shape[1] == 2:
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.scatter(samples[:, 0], samples[:, 1], s=2)
        ax.set_aspect("equal")
    else:
        from .viz import show_images

        fig = show_images(samples, nrow=min(10, len(samples))).figure
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)


def _save_wav(tune: str, out: Path) -> None:
    import wave

    import numpy as np

    from .checkpoint import atomic_write
    from .music import SAMPLE_RATE, render_tune

    pcm = (np.clip(render_tune(tune), -1, 1) * 32767).astype("<i2").tobytes()

    def write(tmp: str) -> None:
        with wave.open(tmp, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            w.writeframes(pcm)

    atomic_write(out, write)


def _digit_options(args: argparse.Namespace, name: str) -> dict:
    """``sample_digits`` keywords from the command line, checked against the model."""
    from .generators import DIGIT_GENERATORS, balanced_labels

    spec = DIGIT_GENERATORS[name]
    given = {
        k: getattr(args, k)
        for k in ("steps", "guidance", "sampler", "temperature", "top_k")
        if getattr(args, k) is not None
    }
    bad = sorted(set(given) - set(spec.options))
    if bad:
        flags = [f"--{k.replace('_', '-')}" for k in bad]
        takes = [f"--{k.replace('_', '-')}" for k in spec.options] or ["none"]
        raise ValueError(f"{name} takes no {', '.join(flags)}; its options: {', '.join(takes)}")
    if args.prompt is not None:
        if spec.prompt is None:
            raise ValueError(f"{name} takes no --prompt (only diffusion-text-mnist does)")
        if args.label is not None:
            raise ValueError("give --prompt or --label, not both")
        return {"options": given, "labels": None}
    labels = None
    if args.label is not None:
        if not spec.conditional:
            raise ValueError(f"{name} is unconditional: it takes no --label")
        if not 0 <= args.label <= 9:
            raise ValueError(f"--label must be a digit 0..9, got {args.label}")
        labels = torch.full((args.n,), args.label, dtype=torch.long)
    elif spec.conditional:
        labels = balanced_labels(args.n)
    return {"options": given, "labels": labels}


def _cmd_sample(args: argparse.Namespace) -> int:
    from . import generators as G

    kinds = G.sampleable()
    name = G.ALIASES.get(args.model, args.model)
    if args.model not in kinds:
        return _error(f"{args.model!r} is not a shipped generator; sampleable: {sorted(kinds)}")
    kind = kinds[args.model]
    if args.n is None:
        args.n = {"digits": 64, "points": 64, "text": 1, "tunes": 4}[kind]
    if args.n < 1:
        return _error(f"--n must be >= 1, got {args.n}")
    allowed = _SAMPLE_OPTIONS[kind]
    extra = [
        f"--{k.replace('_', '-')}"
        for k in ("label", "steps", "guidance", "prompt", "sampler", "temperature", "top_k",
                  "top_p", "max_new", "wav")
        if getattr(args, k) not in (None, False) and k not in allowed
    ]  # fmt: skip
    if extra:
        takes = [f"--{k.replace('_', '-')}" for k in allowed] or ["only --n, --seed, --out"]
        return _error(
            f"{args.model} ({kind}) takes no {', '.join(extra)}; it takes {', '.join(takes)}"
        )
    out = Path(args.out)
    if out.suffix not in _SAMPLE_SUFFIXES[kind]:
        suffixes = " or ".join(_SAMPLE_SUFFIXES[kind])
        return _error(f"--out for {args.model} must end in {suffixes}, got {out.name!r}")
    sampling = {
        k: getattr(args, k)
        for k in ("temperature", "top_k", "top_p")
        if getattr(args, k) is not None
    }
    try:
        if kind == "digits":
            chosen = _digit_options(args, name)
            gen = G.load_generator(name)
            samples = G.sample_digits(
                gen, args.n, labels=chosen["labels"], seed=args.seed, prompt=args.prompt,
                **chosen["options"],
            )  # fmt: skip
        elif kind == "points":
            samples = G.sample_points(name, args.n, seed=args.seed)
        else:
            max_new = args.max_new if args.max_new is not None else 300
            texts = G.sample_text(
                name, args.n, prompt=args.prompt, seed=args.seed, max_new=max_new, **sampling
            )
    except ValueError as err:
        return _error(str(err))
    from .checkpoint import atomic_write

    record: dict = {"model": args.model, "n": args.n, "out": str(out)}
    if kind in ("digits", "points"):
        if out.suffix == ".png":
            _save_picture(samples, out)
        else:
            from safetensors.torch import save_file

            atomic_write(out, lambda tmp: save_file({"samples": samples.contiguous()}, tmp))
        record["shape"] = list(samples.shape)
    else:
        separator = "\n" if kind == "tunes" else "\n\n----\n\n"
        body = separator.join(t.rstrip("\n") for t in texts) + "\n"
        atomic_write(out, lambda tmp: Path(tmp).write_text(body, encoding="utf-8"))
        record["characters"] = [len(t) for t in texts]
        if kind == "tunes" and args.wav:
            wav = out.with_suffix(".wav")
            try:
                _save_wav(texts[0], wav)
                record["wav"] = str(wav)
            except ValueError as err:  # a tune the parser cannot read: say so, keep the ABC
                record["wav_error"] = str(err)
    print(json.dumps(record))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import BENCHMARKS, run_benchmark, summary

    names = list(BENCHMARKS) if args.what == "all" else [args.what]
    given = {
        k: v
        for k, v in vars(args).items()
        if k not in ("command", "what", "func", "tiny") and v is not None
    }
    results = []
    for name in names:
        result = run_benchmark(name, tiny=args.tiny, **given)
        print(json.dumps(result), flush=True)
        results.append(result)
    for result in results:
        print(summary(result))
    return 0


def _add_bench_parsers(sub: argparse._SubParsersAction) -> None:
    """``genai-course bench WHAT [options]``, generated from the records of
    :data:`genai_course.bench.BENCHMARKS`: options left out take the benchmark's default (or,
    with ``--tiny``, its CI size)."""
    from .bench import BENCHMARKS, COMMON_OPTIONS

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--tiny", action="store_true", help="CI sizes: seconds per benchmark")
    for option in COMMON_OPTIONS:
        option.add_to(common)

    p = sub.add_parser(
        "bench", help="benchmarks printing JSON lines, then a one-line summary of each"
    )
    what = p.add_subparsers(dest="what", required=True)
    for bench in BENCHMARKS.values():
        b = what.add_parser(bench.name, parents=[common], help=bench.help)
        for option in bench.options:
            option.add_to(b, bench.run)
    what.add_parser("all", parents=[common], help=f"all of: {', '.join(BENCHMARKS)}")
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

    p = sub.add_parser(
        "sample",
        help="draw samples from a shipped generator",
        description=(
            "Digits to a PNG grid (or .safetensors), the 2-D ring to a scatter plot, text to a "
            ".txt file, tunes to an .abc file (and the first as a .wav with --wav). "
            "Options a model does not take are an error that lists those it does."
        ),
    )
    p.add_argument("model", help="a shipped generator: genai-course info lists them")
    p.add_argument("--n", type=int, default=None, help="samples (64 images, 1 text, 4 tunes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help=".png/.safetensors, .txt or .abc")
    p.add_argument("--label", type=int, default=None, help="digit 0..9 (conditional models)")
    p.add_argument("--steps", type=int, default=None, help="diffusion: DDIM steps (default 50)")
    p.add_argument("--guidance", type=float, default=None, help="diffusion: guidance scale w")
    p.add_argument("--sampler", default=None, choices=("ddim", "ddpm"), help="diffusion")
    p.add_argument("--prompt", default=None, help='text models, or "a thick seven" (text-to-image)')
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--max-new", type=int, default=None, help="new characters (default 300)")
    p.add_argument("--wav", action="store_true", help="tunes: also render the first as a WAV")
    p.set_defaults(func=_cmd_sample)

    _add_bench_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
