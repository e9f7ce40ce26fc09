r"""A small U-Net that predicts the noise of a diffusion model (chapters 12-13).

The network :math:`\varepsilon_\theta(x_t, t, y, c)` takes a noisy image, its timestep and,
optionally, a class label :math:`y` and a conditioning vector :math:`c` (a text embedding), and
returns a tensor of the image's shape.  It is the classic DDPM U-Net (Ho et al. 2020) cut down
to MNIST size:

- the timestep becomes a sinusoidal embedding (as for positions in a transformer) followed by
  a two-layer MLP; the label's embedding and the projected vector :math:`c` are added to it, so
  one vector ``emb`` (B, E) carries everything the network is conditioned on;
- residual blocks GroupNorm -> SiLU -> conv -> (+ emb as a per-channel shift, or scale and
  shift) -> GroupNorm -> SiLU -> dropout -> conv, with a 1x1 conv on the skip path when the
  width changes;
- ``len(channel_mults)`` resolution levels with a stride-2 conv between them (28 -> 14 -> 7
  for the default three levels) and, on the way up, nearest-neighbour upsampling and a conv,
  each block concatenating the output of its mirror block on the way down (the skip
  connections that make it a U);
- multi-head self-attention over the pixels of the coarsest level(s), where 7 x 7 = 49
  positions make it cheap, and in the middle of the network.

Class conditioning reserves one extra embedding row, index ``num_classes``, for "no label":
training replaces labels by it at random (label dropout), so the same network also learns the
unconditional model that classifier-free guidance needs.  ``y = None`` means that index for
every example, and ``cond = None`` a zero vector.

Shapes: B batch, C image channels, H and W divisible by :math:`2^{L-1}` for L levels, E
``emb_dim``, K ``num_classes``, D ``cond_dim``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import check_values
from ..config import Config, check_positive, check_range

__all__ = ["UNet", "UNetConfig", "timestep_embedding"]


@dataclass
class UNetConfig(Config):
    """What a :class:`UNet` is built from; JSON-serialisable, so checkpoints can rebuild it."""

    channels: int = 1  # image channels in and out
    base_width: int = 32  # channels of the first level; enough for MNIST digits
    channel_mults: tuple[int, ...] = (1, 2, 2)  # width of each level / base_width: 28, 14, 7
    blocks_per_level: int = 1  # residual blocks per level (2 in DDPM; 1 keeps CPU training quick)
    attention_levels: tuple[int, ...] = (2,)  # level indices with self-attention: 7x7 for MNIST
    attention_heads: int = 4  # heads of every attention layer; must divide its width
    middle_attention: bool = True  # self-attention between the two middle residual blocks
    norm_groups: int = 8  # GroupNorm groups; must divide base_width * every multiplier
    dropout: float = 0.1  # inside residual blocks; DDPM's value, MNIST overfits without it
    scale_shift: bool = True  # emb sets a per-channel scale and shift; False: a shift only
    emb_dim: int | None = None  # width of the time (and condition) embedding; None: 4*base_width
    num_classes: int = 0  # K > 0: class-conditional, with index K meaning "no label"
    cond_dim: int = 0  # D > 0: also conditioned on a (B, D) vector, e.g. a text embedding

    def validate(self) -> None:
        check_positive(self, "channels", "base_width", "blocks_per_level", "attention_heads")
        if not self.channel_mults or min(self.channel_mults) < 1:
            raise ValueError(
                f"channel_mults must be one or more positive ints, got {self.channel_mults}"
            )
        levels = len(self.channel_mults)
        bad = [i for i in self.attention_levels if not 0 <= i < levels]
        if bad:
            raise ValueError(
                f"attention_levels {bad} do not exist: channel_mults has {levels} levels, "
                f"indexed 0..{levels - 1}"
            )
        if self.norm_groups < 1 or any(w % self.norm_groups for w in self.widths):
            raise ValueError(
                f"norm_groups={self.norm_groups} must divide every level's width {self.widths}"
            )
        attended = [self.widths[i] for i in self.attention_levels]
        if self.middle_attention:
            attended.append(self.widths[-1])
        if any(w % self.attention_heads for w in attended):
            raise ValueError(
                f"attention_heads={self.attention_heads} must divide the width of every level "
                f"with attention, got widths {attended}"
            )
        check_range(self, "dropout", 0.0, 1.0)
        if self.emb_dim is not None and (self.emb_dim < 2 or self.emb_dim % 2):
            raise ValueError(f"emb_dim must be an even int >= 2 (or None), got {self.emb_dim}")
        check_positive(self, "num_classes", "cond_dim", minimum=0)  # 0: no labels, no vector

    @property
    def widths(self) -> tuple[int, ...]:
        """Channels of each level, ``base_width * mult``."""
        return tuple(self.base_width * m for m in self.channel_mults)

    @property
    def embedding_dim(self) -> int:
        """E, the width of ``emb``."""
        return self.emb_dim or 4 * self.base_width

    @property
    def downsample_factor(self) -> int:
        """H and W must be divisible by this, :math:`2^{L-1}` (4 for three levels)."""
        return 2 ** (len(self.channel_mults) - 1)

    @property
    def null_class(self) -> int:
        """The label index that means "no label" (``num_classes``)."""
        return self.num_classes


# ----------------------------------------------------------------------------------------------
# embeddings


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    r"""Sinusoidal embedding of (possibly fractional) timesteps, as transformer positions.

    .. math:: e(t) = \big[\sin(t \omega_0), \dots, \sin(t \omega_{d/2-1}),
       \cos(t \omega_0), \dots, \cos(t \omega_{d/2-1})\big], \qquad
       \omega_i = \text{max\_period}^{-2i/d},

    so the first features turn fast and tell neighbouring steps apart while the last turn
    slowly and say roughly where in the chain ``t`` is.  t (B,) -> (B, dim), float32.
    """
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    angles = t.float()[:, None] * freqs[None]  # (B, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


# ----------------------------------------------------------------------------------------------
# building blocks


class ResBlock(nn.Module):
    """Two 3x3 convs with the embedding injected between them, plus a skip connection.

    (B, c_in, H, W), emb (B, E) -> (B, c_out, H, W).
    """

    def __init__(
        self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float, scale_shift: bool
    ):
        super().__init__()
        self.scale_shift = scale_shift
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out if scale_shift else c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, c_out, H, W)
        e = self.emb(F.silu(emb))[:, :, None, None]  # (B, 2*c_out or c_out, 1, 1)
        if self.scale_shift:
            # after the norm, so the embedding sets the statistics the norm just removed
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:  # DDPM's choice: a shift before the norm
            h = self.norm2(h + e)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W pixels, with a residual connection.

    (B, c, H, W) -> (B, c, H, W); every pixel is a token of c features.
    """

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x))  # (B, 3c, H, W)
        qkv = qkv.reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2)
        q, k, v = qkv.unbind(1)  # each (B, heads, HW, c/heads)
        a = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, c/heads)
        a = a.transpose(-1, -2).reshape(b, c, h, w)
        return x + self.out(a)


class Downsample(nn.Module):
    """Stride-2 3x3 conv: (B, c, H, W) -> (B, c, H/2, W/2) for even H, W."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour doubling, then a 3x3 conv: (B, c, H, W) -> (B, c, 2H, 2W).  Unlike a
    transposed conv it gives no checkerboard artefacts."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """The residual blocks of one level on one side of the U, each optionally followed by
    self-attention."""

    def __init__(self, widths_in: list[int], c_out: int, attention: bool, c: UNetConfig):
        super().__init__()
        e, g = c.embedding_dim, c.norm_groups
        self.blocks = nn.ModuleList(
            ResBlock(w, c_out, e, g, c.dropout, c.scale_shift) for w in widths_in
        )
        self.attns = nn.ModuleList(
            SelfAttention(c_out, c.attention_heads, g) if attention else nn.Identity()
            for _ in widths_in
        )


# ----------------------------------------------------------------------------------------------
# the model


class UNet(nn.Module):
    r"""The noise predictor :math:`\varepsilon_\theta(x_t, t, y, c)`; see the module docstring.

    ``forward(x, t, y=None, cond=None)`` maps images x (B, C, H, W), timesteps t (B,) (integer
    or float), labels y (B,) in ``0..num_classes`` (``num_classes`` meaning "no label") and
    vectors cond (B, cond_dim) to a tensor of x's shape.
    """

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        self.config = c = config or UNetConfig()
        e, widths = c.embedding_dim, c.widths
        self.time_mlp = nn.Sequential(nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e))
        # one extra row: index num_classes is the "no label" of label dropout and guidance
        self.class_emb = nn.Embedding(c.num_classes + 1, e) if c.num_classes else None
        # no bias: a zero vector (the "no condition" of guidance) then adds nothing
        self.cond_proj = nn.Linear(c.cond_dim, e, bias=False) if c.cond_dim else None

        self.conv_in = nn.Conv2d(c.channels, widths[0], 3, padding=1)
        n = c.blocks_per_level
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skip_widths, w = [], widths[0]
        for i, wi in enumerate(widths):
            self.down.append(_Level([w] + [wi] * (n - 1), wi, i in c.attention_levels, c))
            skip_widths += [wi] * n
            w = wi
            last = i == len(widths) - 1
            self.downsample.append(nn.Identity() if last else Downsample(wi))

        self.mid1 = ResBlock(w, w, e, c.norm_groups, c.dropout, c.scale_shift)
        self.mid_attn = (
            SelfAttention(w, c.attention_heads, c.norm_groups) if c.middle_attention else None
        )
        self.mid2 = ResBlock(w, w, e, c.norm_groups, c.dropout, c.scale_shift)

        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(len(widths))):
            wi = widths[i]
            ins = []
            for _ in range(n):
                ins.append(w + skip_widths.pop())
                w = wi
            self.up.append(_Level(ins, wi, i in c.attention_levels, c))
            self.upsample.append(Upsample(wi) if i > 0 else nn.Identity())

        self.norm_out = nn.GroupNorm(c.norm_groups, w)
        self.conv_out = nn.Conv2d(w, c.channels, 3, padding=1)

    # -- checks -------------------------------------------------------------------------------

    def _check_inputs(self, x: Tensor, t: Tensor, y: Tensor | None, cond: Tensor | None) -> None:
        c = self.config
        if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != c.channels:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"expected images of shape (B, {c.channels}, H, W), got {got}")
        f = c.downsample_factor
        if x.shape[2] % f or x.shape[3] % f:
            raise ValueError(
                f"H and W must be divisible by {f} (the U-Net halves them "
                f"{len(c.channel_mults) - 1} times), got {tuple(x.shape[2:])}"
            )
        b = len(x)
        if not isinstance(t, Tensor) or t.shape != (b,) or t.dtype == torch.bool:
            got = f"{tuple(t.shape)} {t.dtype}" if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"expected timesteps t of shape ({b},), one per image, got {got}")
        if y is not None:
            if not c.num_classes:
                raise ValueError(
                    "this U-Net is not class-conditional (num_classes=0); pass no labels y"
                )
            if y.shape != (b,) or y.is_floating_point() or y.dtype == torch.bool:
                raise ValueError(
                    f"expected integer labels y of shape ({b},), got {tuple(y.shape)} {y.dtype}"
                )
            if b and check_values() and (y.min() < 0 or y.max() > c.num_classes):
                raise ValueError(
                    f"labels must be in [0, {c.num_classes}] ({c.num_classes}: no label), got "
                    f"values in [{int(y.min())}, {int(y.max())}]"
                )
        if cond is not None:
            if not c.cond_dim:
                raise ValueError("this U-Net takes no condition vector (cond_dim=0); pass no cond")
            if cond.shape != (b, c.cond_dim) or not cond.is_floating_point():
                raise ValueError(
                    f"expected a float condition of shape ({b}, {c.cond_dim}), got "
                    f"{tuple(cond.shape)} {cond.dtype}"
                )

    # -- the network --------------------------------------------------------------------------

    def embed(self, t: Tensor, y: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        """The conditioning vector ``emb`` (B, E): time MLP + label embedding + projected cond.
        A conditional model given ``y = None`` uses the "no label" row, ``cond = None`` zeros."""
        c = self.config
        emb = self.time_mlp(timestep_embedding(t, c.embedding_dim))  # (B, E)
        if self.class_emb is not None:
            if y is None:
                y = torch.full_like(t, c.null_class, dtype=torch.long)
            emb = emb + self.class_emb(y.long())
        if self.cond_proj is not None and cond is not None:
            emb = emb + self.cond_proj(cond.to(emb.dtype))
        return emb

    def forward(
        self, x: Tensor, t: Tensor, y: Tensor | None = None, cond: Tensor | None = None
    ) -> Tensor:
        """Predicted noise (B, C, H, W) for noisy images x (B, C, H, W) at timesteps t (B,)."""
        self._check_inputs(x, t, y, cond)
        emb = self.embed(t, y, cond)  # (B, E)

        h = self.conv_in(x)  # (B, w0, H, W)
        skips = []
        for level, down in zip(self.down, self.downsample):
            for block, attn in zip(level.blocks, level.attns):
                h = attn(block(h, emb))  # (B, w_i, H/2^i, W/2^i)
                skips.append(h)
            h = down(h)  # (B, w_i, H/2^(i+1), W/2^(i+1)), except at the last level

        h = self.mid1(h, emb)
        if self.mid_attn is not None:
            h = self.mid_attn(h)
        h = self.mid2(h, emb)  # (B, w_last, H/2^(L-1), W/2^(L-1))

        for level, up in zip(self.up, self.upsample):
            for block, attn in zip(level.blocks, level.attns):
                h = attn(block(torch.cat([h, skips.pop()], dim=1), emb))
            h = up(h)  # doubles H and W, except at the top level

        return self.conv_out(F.silu(self.norm_out(h)))  # (B, C, H, W)
