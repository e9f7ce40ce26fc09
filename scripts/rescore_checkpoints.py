"""Recompute the held-out sample metrics of shipped checkpoints without retraining them.

When the evaluation reference changes (issue 21: the floor is now validation digits against
the test digits, which the feature network never learnt from), every FID, KID and ratio in the
manifest must be measured again, the same way ``genai-course train`` measures them after
training. This script loads each checkpoint, calls the recipe's own metric function
(:mod:`genai_course.evaluation`), and replaces those keys of its ``metrics`` in
``manifest.json``; the training facts (steps, seconds, device) and the weights stay as they were.

    python scripts/rescore_checkpoints.py                 # every checkpoint with sample metrics
    python scripts/rescore_checkpoints.py gan-dcgan-mnist # only these
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from genai_course import evaluation as E
from genai_course.checkpoint import atomic_write
from genai_course.pretrained import PRETRAINED_DIR, load_pretrained, read_manifest

# checkpoint -> the metric function its recipe calls after training
SCORERS = {
    "gan-dcgan-mnist": E.gan_sample_metrics,
    "gan-wgan-gp-mnist": E.gan_sample_metrics,
    "gan-cgan-mnist": E.gan_sample_metrics,
    "diffusion-mnist": E.diffusion_sample_metrics,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help=f"checkpoints (default: {', '.join(SCORERS)})")
    parser.add_argument("--folder", default=str(PRETRAINED_DIR))
    args = parser.parse_args(argv)
    names = args.names or list(SCORERS)
    unknown = [n for n in names if n not in SCORERS]
    if unknown:
        parser.error(f"no sample metrics for {', '.join(unknown)}; known: {', '.join(SCORERS)}")
    folder = Path(args.folder)
    manifest = read_manifest(folder)
    for name in names:
        model = load_pretrained(name, folder=folder).eval()
        new = SCORERS[name](model, seed=0)
        old = manifest[name]["metrics"]
        print(name, {k: (round(old.get(k, float("nan")), 3), round(v, 3))
                     for k, v in new.items() if isinstance(v, float)})
        old.update(new)
    text = json.dumps(dict(sorted(manifest.items())), indent=2) + "\n"
    atomic_write(folder / "manifest.json", lambda tmp: Path(tmp).write_text(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
