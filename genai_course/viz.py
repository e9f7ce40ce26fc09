"""Pictures: image grids, 2-D densities and scatter plots (matplotlib, imported lazily)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def make_grid(images: Tensor, nrow: int = 8, padding: int = 1, pad_value: float = 1.0) -> Tensor:
    """Tile (N, C, H, W) images into one (C, H', W') image, ``nrow`` images per row."""
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(images.shape)}")
    n, c, h, w = images.shape
    ncol = min(nrow, n)
    rows = -(-n // ncol)
    grid = torch.full(
        (c, rows * (h + padding) + padding, ncol * (w + padding) + padding),
        pad_value,
        dtype=images.dtype,
    )
    for i, img in enumerate(images.detach().cpu()):
        r, k = divmod(i, ncol)
        top, left = padding + r * (h + padding), padding + k * (w + padding)
        grid[:, top : top + h, left : left + w] = img
    return grid


def show_images(
    images: Tensor,
    nrow: int = 8,
    *,
    title: str | None = None,
    ax=None,
    labels: list | None = None,
    vmin: float = 0.0,
    vmax: float = 1.0,
):
    """Show (N, C, H, W) images in [vmin, vmax] as a grid; returns the axis.

    With ``labels`` (one per image) each image is drawn in its own subplot with a title.
    """
    import matplotlib.pyplot as plt

    images = images.detach().float().cpu().clamp(vmin, vmax)
    if labels is not None:
        n = len(images)
        ncol = min(nrow, n)
        nrows = -(-n // ncol)
        fig, axes = plt.subplots(nrows, ncol, figsize=(1.1 * ncol, 1.25 * nrows), squeeze=False)
        for a in axes.flat:
            a.axis("off")
        for a, img, lab in zip(axes.flat, images, labels):
            a.imshow(_hwc(img), cmap="gray", vmin=vmin, vmax=vmax)
            a.set_title(str(lab), fontsize=8)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        return axes
    grid = make_grid(images, nrow=nrow, pad_value=vmax)
    if ax is None:
        cols = min(nrow, len(images))
        _, ax = plt.subplots(
            figsize=(
                min(12, 0.6 * cols + 1),
                min(12, 0.6 * grid.shape[1] / grid.shape[2] * cols + 1),
            )
        )
    ax.imshow(_hwc(grid), cmap="gray", vmin=vmin, vmax=vmax)
    ax.axis("off")
    if title:
        ax.set_title(title)
    return ax


def _hwc(img: Tensor):
    return img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()


def plot_density_2d(
    log_prob: Callable[[Tensor], Tensor],
    *,
    lim: float = 3.0,
    n: int = 200,
    ax=None,
    points: Tensor | None = None,
    title: str | None = None,
):
    """Contour plot of a 2-D density given its ``log_prob`` (on a ``lim`` box), with points."""
    import matplotlib.pyplot as plt

    xs = torch.linspace(-lim, lim, n)
    gx, gy = torch.meshgrid(xs, xs, indexing="xy")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    with torch.no_grad():
        dens = log_prob(grid).exp().reshape(n, n)
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    ax.contourf(gx.numpy(), gy.numpy(), dens.numpy(), levels=30, cmap="viridis")
    if points is not None:
        p = points.detach().cpu()
        ax.scatter(p[:, 0], p[:, 1], s=2, c="white", alpha=0.4)
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    return ax


class _Figure:
    """A measured value with the text it is shown as (MyST-NB's ``{glue:text}`` uses its repr)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def glue(name: str, value, fmt: str = "{}", *, show: bool = True) -> str:
    """Put a measured ``value`` into the book's prose under ``name``, and return its text.

    ``fmt`` formats the value (``"{:.3f}"``, ``"{:.1%}"``, ``"{:,}"``). On the built site the
    markdown refers to it as ``{glue:text}`name```; the text is stored with MyST-NB's ``glue``
    when that is installed (the ``book`` extra). With ``show`` (the default) it is also printed as
    ``name = text``, so that a reader of the notebook in JupyterLab, where the role is not rendered,
    sees the figure in the output of the cell that measured it.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"expected a glue name that is a Python identifier, got {name!r}")
    text = fmt.format(value)
    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # plain Jupyter or Colab without the book extra: printing is enough
        myst_glue = None
    if myst_glue is not None:
        myst_glue(name, _Figure(text), display=False)
    if show:
        print(f"{name} = {text}")
    return text
