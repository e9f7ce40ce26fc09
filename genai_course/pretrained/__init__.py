"""Checkpoints that ship inside the package.

Each checkpoint is a ``.safetensors`` file in this folder, listed in ``manifest.json`` with its
SHA-256, the exact ``genai-course train ...`` command that produced it and the metrics it
reached.  :func:`load_pretrained` verifies the hash before it reads a byte of weights, so a
missing, truncated or altered file fails clearly instead of loading something else.
safetensors files hold raw tensors and a JSON header: loading them executes no code.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import typing
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import atomic_write, sha256_file
from ..config import Config

PRETRAINED_DIR = Path(__file__).resolve().parent
MANIFEST = "manifest.json"


class PretrainedError(RuntimeError):
    """A shipped checkpoint is unknown, missing or does not match its manifest."""


def read_manifest(folder: str | Path = PRETRAINED_DIR) -> dict[str, dict[str, Any]]:
    """The manifest of ``folder``: ``{name: {file, sha256, class, config, command, metrics}}``."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def list_pretrained(folder: str | Path = PRETRAINED_DIR) -> list[str]:
    """Names of the checkpoints listed in the manifest."""
    return sorted(read_manifest(folder))


def _model_class(path: str) -> type[nn.Module]:
    module, _, name = path.partition(":")
    if not module.startswith("genai_course.") or not name:
        raise PretrainedError(f"refusing to build {path!r}: only genai_course classes are allowed")
    return getattr(importlib.import_module(module), name)


def _config_from(cls: type[nn.Module], config: dict[str, Any]):
    """Rebuild the model's :class:`~genai_course.config.Config` from JSON; its type comes from
    the annotation of the constructor's ``config`` argument (building a default model to ask
    would cost time and draw from the global random-number generator)."""
    hint = typing.get_type_hints(cls.__init__).get("config")
    config_cls = next(
        (a for a in typing.get_args(hint) or (hint,) if dataclasses.is_dataclass(a)), None
    )
    if config_cls is None or not issubclass(config_cls, Config):
        raise PretrainedError(f"{cls.__name__}.__init__ has no Config-typed config argument")
    return config_cls.from_dict(config)  # lists back to tuples, sub-configs rebuilt


def _entry(name: str, folder: str | Path) -> dict[str, Any]:
    manifest = read_manifest(folder)
    if name not in manifest:
        raise PretrainedError(f"no pretrained checkpoint {name!r}; known: {sorted(manifest)}")
    return manifest[name]


def _verified(name: str, folder: str | Path) -> tuple[Path, dict[str, Any]]:
    entry = _entry(name, folder)
    path = Path(folder) / entry["file"]
    if not path.is_file():
        raise PretrainedError(
            f"the checkpoint file {path} is missing; rebuild it with: {entry['command']}"
        )
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise PretrainedError(
            f"sha256 of {path.name} is {digest[:16]}..., the manifest says "
            f"{entry['sha256'][:16]}...: the file is altered or truncated. "
            f"Rebuild it with: {entry['command']}"
        )
    return path, entry


def verify(name: str, folder: str | Path = PRETRAINED_DIR) -> Path:
    """Check that checkpoint ``name`` exists and matches its manifest hash; return its path."""
    return _verified(name, folder)[0]


def load_pretrained(
    name: str, *, device: str | torch.device = "cpu", folder: str | Path = PRETRAINED_DIR
) -> nn.Module:
    """Build the model of checkpoint ``name``, load its verified weights, and put it in eval mode.

    >>> clf = load_pretrained("digit-classifier")   # doctest: +SKIP
    """
    from safetensors.torch import load_model

    path, entry = _verified(name, folder)
    cls = _model_class(entry["class"])
    build = getattr(cls, "from_config", cls)  # a model of several parts builds them itself
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten: leave the
        model = build(_config_from(cls, entry["config"]))  # caller's generator untouched
    load_model(model, str(path), strict=True)  # restores tied weights (GPT's head = embedding)
    return model.to(device).eval()


def pretrained_info(name: str, folder: str | Path = PRETRAINED_DIR) -> dict[str, Any]:
    """The manifest entry of ``name`` (command, metrics, sha256, ...)."""
    return _entry(name, folder)


def save_pretrained(
    model: nn.Module,
    name: str,
    folder: str | Path,
    *,
    command: str,
    metrics: dict[str, float],
    notes: str = "",
) -> dict[str, Any]:
    """Write ``model`` as ``folder/name.safetensors`` and add its entry to ``folder/manifest.json``.

    The model must have a ``config`` dataclass with ``to_dict()``; both writes are atomic. The
    model itself is left on its device (the weights are written from a CPU copy).
    """
    from safetensors.torch import save_model

    folder = Path(folder)
    file = f"{name}.safetensors"
    # a CPU copy, so the caller's model stays where it is (on the GPU, say); deepcopy keeps
    # tied weights tied, and save_model stores a tensor shared by two names once
    cpu_model = copy.deepcopy(model).cpu()
    atomic_write(folder / file, lambda tmp: save_model(cpu_model, tmp))
    entry = {
        "file": file,
        "sha256": sha256_file(folder / file),
        "class": f"{type(model).__module__}:{type(model).__name__}",
        "config": model.config.to_dict(),
        "command": command,
        "metrics": metrics,
        "torch": torch.__version__.split("+")[0],
        "notes": notes,
    }
    manifest = read_manifest(folder)
    manifest[name] = entry
    text = json.dumps(dict(sorted(manifest.items())), indent=2) + "\n"
    atomic_write(folder / MANIFEST, lambda tmp: Path(tmp).write_text(text))
    return entry


__all__ = [
    "PretrainedError",
    "list_pretrained",
    "load_pretrained",
    "pretrained_info",
    "read_manifest",
    "save_pretrained",
    "verify",
]
