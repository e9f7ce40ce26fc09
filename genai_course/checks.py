"""Input checks shared by the models and the data: one message style, nothing imported from the
package, so that :mod:`genai_course.models` depends on these checks and not on the datasets."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_image_batch", "check_values"]


def check_values() -> bool:
    """Whether input checks that read the data (value ranges, label ranges) should run: always,
    except while ``torch.compile`` traces a model, where a data-dependent ``bool`` would break
    the graph in two and sync with the host on every step.  Shape and dtype checks do not read
    the data and always run."""
    return not torch.compiler.is_compiling()


def check_image_batch(x: Tensor, shape: tuple[int, int, int], *, unit_range: bool = False) -> None:
    """Raise a ValueError naming what was expected unless ``x`` is a float batch of images of
    shape ``(N, *shape)``; with ``unit_range`` the pixels must also lie in [0, 1] (one reduction and
    a host sync, worth it where out-of-range pixels would silently give a meaningless loss); not
    while ``torch.compile`` traces (:func:`check_values`)."""
    if not isinstance(x, Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != tuple(shape):
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(
            f"expected images of shape (N, C, H, W) = (N, {', '.join(map(str, shape))}), got {got}"
        )
    if not x.is_floating_point():
        raise ValueError(f"expected float pixels in [0, 1], got dtype {x.dtype}")
    if unit_range and check_values() and bool(((x < 0) | (x > 1)).any()):
        raise ValueError(
            f"expected pixels in [0, 1], got values in [{float(x.min()):.3g}, {float(x.max()):.3g}]"
        )
