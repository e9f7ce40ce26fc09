"""Neural style transfer and texture synthesis by optimising pixels (Gatys et al., 2016).

A frozen feature network maps an image to feature maps :math:`F^l` of shape
:math:`(C_l, H_l, W_l)`, one per layer ``l``. *Style* is what survives averaging over positions:
the Gram matrix of every style layer, the correlations between its channels,

.. math:: G^l = \\frac{F^l (F^l)^\\top}{C_l H_l W_l} \\in \\mathbb R^{C_l \\times C_l}

(:math:`F^l` flattened to :math:`C_l \\times H_l W_l`). *Content* is where things are: the feature
maps of one deeper layer ``L`` themselves. Starting from the content image (or noise), the
pixels ``x`` are optimised against a content image ``c`` and a style image ``s``:

.. math:: \\mathcal L(x) = \\alpha\\,\\mathcal L_{\\rm content} + \\beta\\,\\mathcal L_{\\rm style}
          + \\gamma\\,\\mathrm{TV}(x),

.. math:: \\mathcal L_{\\rm content} = \\mathrm{mean}\\big((F^L(x) - F^L(c))^2\\big),\\qquad
          \\mathcal L_{\\rm style} = \\sum_l w_l \\,\\lVert G^l(x) - G^l(s)\\rVert_F^2,

.. math:: \\mathrm{TV}(x) = \\mathrm{mean}\\,|x_{i+1,j} - x_{i,j}|
          + \\mathrm{mean}\\,|x_{i,j+1} - x_{i,j}|

(absolute, not squared, differences: the anisotropic total variation, which removes pixel
noise but keeps edges); by default every style layer weighs the same, w_l = 1 / (number of
style layers). Adam updates the pixels, which are clamped to [0, 1] after every step. Without
a content image (``content=None``) only the style term is left and the result, started from
noise at the requested ``size``, is a new texture with the statistics of ``s`` (Gatys et al.,
2015).
Gram matrices are :math:`C_l \\times C_l` whatever the image size, so the style image need not
have the content image's size.

The feature network is pluggable: any ``nn.Module`` mapping (B, 3, H, W) images in [0, 1] to
a list of feature maps, with attributes ``style_layers`` and ``content_layer`` (indices into
that list). :class:`RandomFeatures`, the offline default, is one layer of random filters at
several sizes, which already captures much of what makes a texture (Ustyuzhaninov et al.,
2017); :class:`VGGFeatures` is the ImageNet-trained VGG19 of the original papers, used only
if torchvision and its weights are already on the machine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import Config, check_choice, check_positive

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FEATURE_NETWORKS",
    "VGG19_WEIGHTS_FILE",
    "RandomFeatures",
    "StyleTransferConfig",
    "StyleTransferResult",
    "VGGFeatures",
    "check_rgb",
    "content_loss",
    "feature_network",
    "gram_matrix",
    "style_loss",
    "style_transfer",
    "total_variation",
]

# Per-channel statistics of ImageNet, the usual input normalisation of image networks.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Noise starts are the style's mean colour plus this much Gaussian noise (pixel units): enough
# to break the symmetry, while full-range white noise leaves speckle that takes hundreds of
# steps to remove.
_NOISE_STD = 0.02


# checks


def _describe(image: object) -> str:
    """Shape, dtype and value range of a tensor (or the type of anything else), for errors."""
    if not isinstance(image, Tensor):
        return f"a {type(image).__name__}"
    text = f"shape {tuple(image.shape)}, dtype {image.dtype}"
    if image.numel() and not image.is_complex():
        values = image.detach().float()
        text += f", values in [{float(values.min()):.3g}, {float(values.max()):.3g}]"
    return text


def check_rgb(image: Tensor, name: str = "image") -> None:
    """Raise a ``ValueError`` unless ``image`` is a float RGB image (3, H, W) or batch
    (B, 3, H, W) with values in [0, 1].

    The message says what was expected and what came: shape, dtype and value range. A grey
    image, such as the ``brick``, ``grass`` and ``gravel`` textures of
    :func:`~genai_course.data.load_image` (shape (1, H, W)), is rejected rather than silently
    broadcast; ``image.expand(3, -1, -1)`` makes it a grey RGB image.
    """
    expected = (
        f"{name} must be an RGB image of shape (3, H, W) or a batch (B, 3, H, W), "
        "float with values in [0, 1]"
    )
    if not isinstance(image, Tensor) or image.ndim not in (3, 4) or image.shape[-3] != 3:
        hint = ""
        if isinstance(image, Tensor) and (image.ndim == 2 or image.shape[-3] == 1):
            hint = "; for a grey image (a texture such as 'brick') use image.expand(3, -1, -1)"
        raise ValueError(f"{expected}; got {_describe(image)}{hint}")
    if not image.is_floating_point():
        raise ValueError(f"{expected}; got {_describe(image)} (divide uint8 pixels by 255)")
    if min(image.shape[-2:]) < 1 or image.shape[0] < 1:
        raise ValueError(f"{expected}; got an empty image, {_describe(image)}")
    if bool(((image < 0) | (image > 1)).any()) or not bool(torch.isfinite(image).all()):
        raise ValueError(f"{expected}; got {_describe(image)}")


def _as_batch(image: Tensor) -> Tensor:
    """(3, H, W) -> (1, 3, H, W); batches pass through."""
    return image[None] if image.ndim == 3 else image


def _select(maps: list[Tensor], indices: Sequence[int]) -> list[Tensor]:
    """The feature maps at ``indices`` (a network's ``style_layers``)."""
    return [maps[i] for i in indices]


# losses


def gram_matrix(features: Tensor) -> Tensor:
    """Gram matrices of feature maps, normalised by the number of values per map:

    .. math:: G_{cd} = \\frac{1}{C H W} \\sum_{i,j} F_{c,i,j} F_{d,i,j}.

    Summing over positions forgets where features are and keeps which occur together, the
    statistic that defines a texture. Dividing by :math:`H W` makes it an average over
    positions, so images of different sizes have comparable Gram matrices (a tiled image has
    its tile's); dividing also by :math:`C` keeps :math:`\\lVert G\\rVert_F^2`, a sum of
    :math:`C^2` entries, comparable between layers of different widths.

    Args:
        features: (B, C, H, W).

    Returns:
        (B, C, C), symmetric and positive semi-definite.
    """
    if not isinstance(features, Tensor) or features.ndim != 4:
        got = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"features must have shape (B, C, H, W), got {got}")
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)  # (B, C, HW)
    return flat @ flat.transpose(1, 2) / (c * h * w)  # (B, C, C)


def style_loss(
    features: list[Tensor],
    target_grams: list[Tensor],
    weights: Sequence[float] | None = None,
) -> Tensor:
    """Weighted squared Frobenius distance between Gram matrices, summed over layers:

    .. math:: \\mathcal L_{\\rm style} = \\sum_l w_l \\,\\lVert G^l(x) - G^l(s)\\rVert_F^2,

    averaged over the batch.

    Args:
        features: one (B, C_l, H_l, W_l) feature map per style layer, of the image ``x``.
        target_grams: one (B, C_l, C_l) or (1, C_l, C_l) Gram matrix per layer, of the style
            image ``s`` (:func:`gram_matrix`); a single one is compared with every image.
        weights: w_l, one per layer; ``None`` gives every layer 1 / (number of layers).

    Returns:
        a scalar tensor, >= 0, in squared Gram units.
    """
    if len(features) != len(target_grams) or not features:
        raise ValueError(
            f"need one target Gram matrix per feature map (at least one), got {len(features)} "
            f"feature maps and {len(target_grams)} Gram matrices"
        )
    if weights is None:
        weights = [1.0 / len(features)] * len(features)
    if len(weights) != len(features):
        raise ValueError(f"need one weight per layer ({len(features)}), got {len(weights)}")
    total = features[0].new_zeros(())
    for f, target, w in zip(features, target_grams, weights):
        gram = gram_matrix(f)  # (B, C, C)
        if target.ndim != 3 or target.shape[1:] != gram.shape[1:]:
            raise ValueError(
                f"target Gram matrix must have shape (B, {gram.shape[1]}, {gram.shape[2]}) "
                f"to match features {tuple(f.shape)}, got {tuple(target.shape)}"
            )
        total = total + w * (gram - target).square().sum(dim=(1, 2)).mean()
    return total


def content_loss(features: Tensor, target: Tensor) -> Tensor:
    """Mean squared error between feature maps, :math:`\\mathrm{mean}((F^L(x) - F^L(c))^2)`.

    Args:
        features: feature maps of the image, any shape, e.g. (B, C, H, W).
        target: feature maps of the content image, the same shape (or broadcastable to it).

    Returns:
        a scalar tensor, >= 0, in squared feature units.
    """
    try:
        matches = torch.broadcast_shapes(features.shape, target.shape) == features.shape
    except RuntimeError:
        matches = False
    if not matches:
        raise ValueError(
            f"content target {tuple(target.shape)} does not match features "
            f"{tuple(features.shape)}; content and result must have the same H, W"
        )
    return (features - target).square().mean()


def total_variation(images: Tensor) -> Tensor:
    """Anisotropic total variation, the mean absolute difference of neighbouring pixels:

    .. math:: \\mathrm{TV}(x) = \\mathrm{mean}\\,|x_{i+1,j} - x_{i,j}|
              + \\mathrm{mean}\\,|x_{i,j+1} - x_{i,j}|,

    each mean over channels, valid pixel pairs and the batch.

    Args:
        images: (3, H, W) or (B, 3, H, W) in [0, 1] (see :func:`check_rgb`), H, W >= 2.

    Returns:
        a scalar tensor in [0, 2], in pixel units (0 for a constant image).
    """
    check_rgb(images, "images")
    if min(images.shape[-2:]) < 2:
        raise ValueError(f"images need H, W >= 2 for differences, got {tuple(images.shape)}")
    down = (images[..., 1:, :] - images[..., :-1, :]).abs().mean()
    right = (images[..., :, 1:] - images[..., :, :-1]).abs().mean()
    return down + right


# feature networks


class _Normalise(nn.Module):
    """(x - mean) / std per channel, with ImageNet statistics: (B, 3, H, W) -> same."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class RandomFeatures(nn.Module):
    """One layer of random convolutional filters at several sizes: the offline feature network.

    Ustyuzhaninov et al. (2017) found that a single layer of random filters, of several sizes
    up to tens of pixels, captures much of what makes a texture; no training and no download
    are needed, and a frozen random layer is as fixed a "feature space" as a trained one.

    For every kernel size ``k`` the normalised image (ImageNet mean and std per channel) goes
    through ``channels`` random ``k x k`` filters (Gaussian weights, a fixed seed) and a ReLU,
    with reflect padding, so every style map is (B, channels, H, W). Each filter is scaled to
    unit norm, so that every size responds alike to white noise and the layers weigh alike in
    the style loss. Filters larger than 1 x 1 are also made zero-mean (over their channels and
    taps together): a flat grey region gives 0, so a 15 x 15 filter measures structure and
    colour contrast rather than the brightness its 675 taps would add up. The 1 x 1 filters are
    left uncentred: they see one pixel's colour, and their Gram matrix carries the colour
    distribution of the style (without them, grey styles came out with coloured speckle).

    Content needs *where* things are, not every pixel: matching full-resolution maps would pin
    the pixels and leave no room for the style. The content map is therefore the image
    downsampled ``content_pool`` times (antialiased bilinear) and seen through the
    ``content_kernel`` filters, (B, channels, H // p, W // p): it fixes the layout at 1/p
    resolution, edges and colours of regions larger than p pixels, and leaves the detail
    inside each p x p cell to the style, the role of VGG's deeper, 8x-downsampled relu4_2.
    (Filtering first and pooling after would let the content map see the fine texture, which
    the style is meant to change; a box pool would also leave a visible p x p block grid.)

    Outputs, in order: the style maps of ``kernel_sizes``, then the content map;
    ``style_layers = (0, ..., len(kernel_sizes) - 1)`` and ``content_layer = len(kernel_sizes)``.
    Parameters are frozen (``requires_grad`` False) and the module is in eval mode. With the
    defaults one forward and backward pass at 128 x 192 takes about 0.04 s on 2 CPU cores.

    Args:
        kernel_sizes: odd filter sizes, one style layer each; images need H, W > max // 2.
        channels: filters per size (Ustyuzhaninov et al. used 128; 32 keeps a CPU step fast
            and gives similar textures at 128 px).
        content_kernel: the size (one of ``kernel_sizes``) whose maps make the content map.
        content_pool: downsampling factor of the content map (1 keeps full resolution).
        seed: seed of the filters; the same seed gives the same network on every machine.
    """

    def __init__(
        self,
        kernel_sizes: Sequence[int] = (1, 3, 5, 7, 11, 15),
        channels: int = 32,
        content_kernel: int = 3,
        content_pool: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__()
        kernel_sizes = tuple(int(k) for k in kernel_sizes)
        if not kernel_sizes or any(k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd sizes >= 1, got {kernel_sizes}")
        if content_kernel not in kernel_sizes:
            raise ValueError(f"content_kernel {content_kernel} is not in {kernel_sizes}")
        if channels < 1 or content_pool < 1:
            raise ValueError(
                f"channels and content_pool must be >= 1, got {channels} and {content_pool}"
            )
        self.kernel_sizes, self.channels = kernel_sizes, channels
        self.content_kernel, self.content_pool = content_kernel, content_pool
        self.normalise = _Normalise()
        generator = torch.Generator().manual_seed(seed)
        self.convs = nn.ModuleList()
        for k in kernel_sizes:
            weight = torch.randn(channels, 3, k, k, generator=generator)
            if k > 1:
                weight = weight - weight.mean(dim=(1, 2, 3), keepdim=True)
            weight = weight / weight.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            conv = nn.Conv2d(3, channels, k, bias=False)
            conv.weight.data.copy_(weight)
            self.convs.append(conv)
        self.requires_grad_(False)
        self.eval()
        self.style_layers = tuple(range(len(kernel_sizes)))
        self.content_layer = len(kernel_sizes)

    def forward(self, images: Tensor) -> list[Tensor]:
        """(B, 3, H, W) in [0, 1] -> [(B, channels, H, W)] * len(kernel_sizes)
        + [(B, channels, H // content_pool, W // content_pool)]."""
        check_rgb(images, "images")
        x = self.normalise(_as_batch(images))
        h, w = x.shape[-2:]
        # Reflect padding needs more pixels than it pads, also on the downsampled content map.
        p, half = self.content_pool, self.content_kernel // 2
        if min(h, w) <= max(self.kernel_sizes) // 2 or min(h, w) // p <= half:
            smallest = max(max(self.kernel_sizes) // 2, p * (half + 1) - 1) + 1
            raise ValueError(
                f"images must be at least {smallest} pixels high and wide, got {h}, {w}"
            )
        maps = []
        for k, conv in zip(self.kernel_sizes, self.convs):
            padded = F.pad(x, (k // 2,) * 4, mode="reflect") if k > 1 else x
            maps.append(conv(padded).relu())  # (B, channels, H, W)
        # The content map: the layout at 1/p resolution, seen through the same small filters.
        k = self.content_kernel
        small = x
        if p > 1:
            small = F.interpolate(x, size=(h // p, w // p), mode="bilinear", antialias=True)
        small = F.pad(small, (k // 2,) * 4, mode="reflect") if k > 1 else small
        content = self.convs[self.kernel_sizes.index(k)](small).relu()  # (B, channels, H/p, W/p)
        return [*maps, content]


# The 16 convolutions of VGG19 in 5 blocks; each is followed by a ReLU, each block by a max pool.
_VGG19_BLOCKS = (2, 2, 4, 4, 4)
VGG19_WEIGHTS_FILE = "vgg19-dcbb9e9d.pth"  # torchvision's VGG19_Weights.IMAGENET1K_V1


def _vgg19_layer_index() -> dict[str, int]:
    """Names of VGG19's layers ("conv1_1", "relu1_1", ..., "pool5") -> index in ``features``."""
    names, index = {}, 0
    for block, convs in enumerate(_VGG19_BLOCKS, start=1):
        for conv in range(1, convs + 1):
            names[f"conv{block}_{conv}"], names[f"relu{block}_{conv}"] = index, index + 1
            index += 2
        names[f"pool{block}"] = index
        index += 1
    return names


class VGGFeatures(nn.Module):
    """The convolutional part of the ImageNet-trained VGG19, as in Gatys et al. (2016).

    Needs torchvision and its ``VGG19_Weights.IMAGENET1K_V1`` file (``vgg19-dcbb9e9d.pth``, 548
    MB) already in torch's hub cache (``torch.hub.get_dir()/checkpoints``); it never downloads.
    To get them, once, on a machine with network::

        pip install torchvision
        python -c "import torchvision; torchvision.models.vgg19(weights='IMAGENET1K_V1')"

    Inputs (B, 3, H, W) in [0, 1] are normalised with the ImageNet mean and std inside.
    Outputs, in order, the maps after the layers ``style`` then ``content`` (names such as
    ``relu4_2``, or ``conv``/``pool``); the network is cut after the last of them.
    Parameters are frozen and the module is in eval mode.

    Args:
        style: layer names of the style maps (``style_layers`` indexes them).
        content: layer name of the content map (``content_layer``).
        weights_path: a local VGG19 state dict to use instead of the hub cache.

    Raises:
        ImportError: torchvision is not installed.
        RuntimeError: the weights are not on this machine.
    """

    def __init__(
        self,
        style: Sequence[str] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
        content: str = "relu4_2",
        weights_path: str | Path | None = None,
    ) -> None:
        super().__init__()
        known = _vgg19_layer_index()
        names = [*style, content]
        unknown = [n for n in names if n not in known]
        if unknown or not style:
            raise ValueError(
                f"style needs at least one layer and all names must be VGG19 layers; unknown: "
                f"{unknown}; known: {', '.join(known)}"
            )
        try:
            import torchvision
        except ImportError as err:
            raise ImportError(
                "VGGFeatures needs torchvision: pip install torchvision and download the VGG19 "
                "weights once with network (torchvision.models.vgg19(weights='IMAGENET1K_V1')); "
                "the course's default RandomFeatures works offline"
            ) from err
        path = (
            Path(weights_path)
            if weights_path is not None
            else Path(torch.hub.get_dir()) / "checkpoints" / VGG19_WEIGHTS_FILE
        )
        if not path.is_file():
            raise RuntimeError(
                f"VGG19 weights not found at {path}; this code never downloads. Fetch them once "
                'with network: python -c "import torchvision; '
                "torchvision.models.vgg19(weights='IMAGENET1K_V1')\", or pass weights_path; the "
                "course's default RandomFeatures works offline"
            )
        model = torchvision.models.vgg19(weights=None)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.layer_names = tuple(names)
        self._indices = [known[n] for n in names]
        self.normalise = _Normalise()
        self.features = model.features[: max(self._indices) + 1]
        for layer in self.features:
            if isinstance(layer, nn.ReLU):
                layer.inplace = False  # an in-place ReLU would overwrite a returned conv map
        self.requires_grad_(False)
        self.eval()
        self.style_layers = tuple(range(len(style)))
        self.content_layer = len(style)

    def forward(self, images: Tensor) -> list[Tensor]:
        """(B, 3, H, W) in [0, 1] -> one (B, C_l, H_l, W_l) map per name in ``layer_names``."""
        check_rgb(images, "images")
        x = self.normalise(_as_batch(images))
        outputs = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self._indices:
                outputs[index] = x
        return [outputs[i] for i in self._indices]


FEATURE_NETWORKS = {
    "random": "RandomFeatures: random filters at 6 sizes, offline, fast on a CPU (the default)",
    "vgg19": "VGGFeatures: ImageNet VGG19 of Gatys et al.; needs torchvision and local weights",
}


def feature_network(name: str = "random", **kwargs) -> nn.Module:
    """The feature network ``name`` (a key of ``FEATURE_NETWORKS``), built with ``kwargs``:
    ``feature_network("random", channels=32)`` is ``RandomFeatures(channels=32)``."""
    if name == "random":
        return RandomFeatures(**kwargs)
    if name == "vgg19":
        return VGGFeatures(**kwargs)
    raise ValueError(f"unknown feature network {name!r}; known: {', '.join(FEATURE_NETWORKS)}")


# optimisation


@dataclass
class StyleTransferConfig(Config):
    """How :func:`style_transfer` optimises the pixels (Adam, pixels clamped to [0, 1]).

    The defaults are tuned for :class:`RandomFeatures` at 128 px, chelsea (128 x 192) as
    content and coffee as style: the style loss falls ~29x within 25 steps and 74x by step
    200, the content loss ends at 0.31 of a flat grey image's, and the cat stays clear; 200
    steps took ~14 s on one CPU thread. A style already close to the content in Gram terms
    falls less (the grey ``brick`` texture: 5x at these weights, 17x at ``style_weight=20``).
    Other feature networks have other loss scales: with VGG19 the style weight is usually
    orders of magnitude larger.
    """

    steps: int = 200  # the losses level off by ~100-150 steps at lr 0.02
    lr: float = 0.02  # Adam's step in pixel units: a pixel moves at most ~lr per step
    content_weight: float = 1.0  # alpha
    style_weight: float = 5.0  # beta: at 1 the style loss fell <10x and fine noise grew
    tv_weight: float = 0.02  # gamma: halves single-pixel speckle, keeps fur; 0.1 looks painted
    init: str = "content"  # "content" or "noise"; texture synthesis always starts from noise
    seed: int = 0  # of the noise
    record_every: int = 25  # steps between history entries and snapshots

    def validate(self) -> None:
        for name in ("steps", "record_every"):
            value = getattr(self, name)
            if not isinstance(value, int):
                raise ValueError(f"StyleTransferConfig.{name} must be an int, got {value!r}")
        check_positive(self, "steps", minimum=0)
        check_positive(self, "record_every")
        for name in ("lr", "content_weight", "style_weight", "tv_weight"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"StyleTransferConfig.{name} must be finite, got {value!r}")
        check_positive(self, "lr", minimum=0, strict=True)
        check_positive(self, "content_weight", "style_weight", "tv_weight", minimum=0)
        check_choice(self, "init", ("content", "noise"))


@dataclass
class StyleTransferResult:
    """What :func:`style_transfer` returns.

    Attributes:
        image: (3, H, W) in [0, 1], float32 on the CPU.
        history: lists indexed alike: ``step`` (Adam steps done), the *unweighted* ``style``
            and ``content`` losses (content is 0 for texture synthesis), ``tv``, and the
            weighted ``total`` that was minimised.
        snapshots: (step, (3, H, W) CPU image) at every recorded step.
        seconds: wall-clock time of the optimisation loop (after the style's Gram matrices
            and the content's target are computed).
    """

    image: Tensor
    history: dict[str, list[float]] = field(default_factory=dict)
    snapshots: list[tuple[int, Tensor]] = field(default_factory=list)
    seconds: float = 0.0


def _placement(net: nn.Module, image: Tensor) -> tuple[torch.device, torch.dtype]:
    """The image's device and the network's floating dtype (float32 if it has none)."""
    for tensor in [*net.parameters(), *net.buffers()]:
        if tensor.is_floating_point():
            return image.device, tensor.dtype
    return image.device, torch.float32


def _image_size(size: int | tuple[int, int]) -> tuple[int, int]:
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or any(not isinstance(s, int) or s < 1 for s in hw):
        raise ValueError(f"size must be an int or (H, W) of positive ints, got {size!r}")
    return hw


def style_transfer(
    content: Tensor | None,
    style: Tensor,
    net: nn.Module | None = None,
    config: StyleTransferConfig | None = None,
    *,
    size: int | tuple[int, int] | None = None,
    progress: bool = False,
) -> StyleTransferResult:
    """Optimise an image's pixels to have ``content``'s layout and ``style``'s textures.

    Minimises ``content_weight * L_content + style_weight * L_style + tv_weight * TV`` (see
    the module docstring) with Adam on the pixels; after every step the pixels are clamped
    to [0, 1] (projected gradient descent), so the image never leaves the valid range. The
    network's parameters are never touched: gradients are taken with respect to the pixels
    only.

    Args:
        content: (3, H, W) or (1, 3, H, W) in [0, 1]; the result has its size. ``None`` for
            texture synthesis: no content loss, start from noise.
        style: (3, H_s, W_s) or (1, 3, H_s, W_s) in [0, 1], any size (moved to ``content``'s
            device).
        net: a feature network (see the module docstring), moved to the images' device;
            ``None`` builds ``RandomFeatures()``.
        config: the optimisation settings; ``None`` for the defaults.
        size: texture synthesis only: the (H, W) (or side) of the new texture; default the
            style image's size.
        progress: show a tqdm progress bar.

    Returns:
        a :class:`StyleTransferResult`; history and snapshots at steps 0, record_every, ...,
        and the last step.
    """
    config = config or StyleTransferConfig()
    check_rgb(style, "style")
    if style.ndim == 4 and len(style) != 1:
        raise ValueError(f"style must be one image, got a batch of {len(style)}")
    if content is not None:
        check_rgb(content, "content")
        if content.ndim == 4 and len(content) != 1:
            raise ValueError(f"content must be one image, got a batch of {len(content)}")
        if size is not None:
            raise ValueError(
                "size is for texture synthesis (content=None); the result has content's size"
            )
    net = net if net is not None else RandomFeatures()
    anchor = content if content is not None else style
    device, dtype = _placement(net, anchor)
    net = net.to(device)
    style = _as_batch(style).to(device, dtype)

    generator = torch.Generator().manual_seed(config.seed)
    with torch.no_grad():
        style_grams = [
            gram_matrix(style_maps) for style_maps in _select(net(style), net.style_layers)
        ]
        if content is not None:
            content = _as_batch(content).to(device, dtype)
            content_target = net(content)[net.content_layer]
        if content is not None and config.init == "content":
            x = content.clone()
        else:
            hw = _image_size(size) if size is not None else tuple(anchor.shape[-2:])
            noise = torch.randn(1, 3, *hw, generator=generator, dtype=dtype).to(device)
            x = (style.mean(dim=(2, 3), keepdim=True) + _NOISE_STD * noise).clamp(0.0, 1.0)
    x.requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=config.lr)

    history: dict[str, list[float]] = {k: [] for k in ("step", "style", "content", "tv", "total")}
    snapshots: list[tuple[int, Tensor]] = []
    from tqdm.auto import tqdm

    bar = tqdm(total=config.steps, disable=not progress, desc="style transfer")
    start = time.perf_counter()
    for step in range(config.steps + 1):
        last = step == config.steps
        with torch.set_grad_enabled(not last):
            maps = net(x)
            l_style = style_loss(_select(maps, net.style_layers), style_grams)
            l_content = (
                content_loss(maps[net.content_layer], content_target)
                if content is not None
                else x.new_zeros(())
            )
            l_tv = total_variation(x)
            total = (
                config.content_weight * l_content
                + config.style_weight * l_style
                + config.tv_weight * l_tv
            )
        if step % config.record_every == 0 or last:
            values = [l_style.item(), l_content.item(), l_tv.item(), total.item()]
            for key, value in zip(("style", "content", "tv", "total"), values):
                history[key].append(value)
            history["step"].append(step)
            snapshots.append((step, x.detach()[0].to("cpu", torch.float32).clone()))
            bar.set_postfix(style=f"{values[0]:.3g}", content=f"{values[1]:.3g}")
        if last:
            break
        (x.grad,) = torch.autograd.grad(total, [x])
        optimizer.step()
        with torch.no_grad():
            x.clamp_(0.0, 1.0)
        bar.update()
    bar.close()
    image = x.detach()[0].to("cpu", torch.float32).clone()
    return StyleTransferResult(image, history, snapshots, time.perf_counter() - start)
