"""Vector-quantised autoencoders and an autoregressive prior over their codes (chapter 05;
VQ-VAE, van den Oord, Vinyals & Kavukcuoglu 2017).

A VAE (chapter 03) gives every image a continuous Gaussian code.  A VQ-VAE gives it a
*discrete* one: the encoder maps an image to a grid of vectors
:math:`z_e(x) \\in \\mathbb R^{D \\times h \\times w}`, and each vector is replaced by its nearest
entry of a learned codebook :math:`e_1, \\dots, e_K \\in \\mathbb R^D`,

.. math:: k_{ij} = \\arg\\min_k \\lVert z_{e,ij} - e_k \\rVert^2, \\qquad
   z_{q,ij} = e_{k_{ij}},

so an image becomes an :math:`h \\times w` grid of integers in :math:`\\{0, \\dots, K-1\\}` (a
7x7 grid of 64 codes for MNIST here).  The squared distance is expanded as
:math:`\\lVert z \\rVert^2 - 2\\, z \\cdot e_k + \\lVert e_k \\rVert^2`, one matrix product for
all vectors and codes.  The decoder reconstructs the image from :math:`z_q`.

The argmin has no useful gradient.  The *straight-through estimator* copies the decoder's
gradient with respect to :math:`z_q` onto :math:`z_e`, as if quantisation were the identity:
the forward pass uses :math:`z_e + \\mathrm{sg}[z_q - z_e] = z_q` (sg: stop-gradient, i.e.
``detach``), whose derivative with respect to :math:`z_e` is the identity.  Reconstruction
therefore trains the encoder, but nothing trains the codebook, so two terms are added:

.. math:: \\mathcal L = \\underbrace{-\\log p_\\theta(x \\mid z_q(x))}_{\\text{reconstruction}}
   + \\underbrace{\\lVert \\mathrm{sg}[z_e(x)] - e \\rVert^2}_{\\text{codebook}}
   + \\beta\\,\\underbrace{\\lVert z_e(x) - \\mathrm{sg}[e] \\rVert^2}_{\\text{commitment}},

where :math:`e` is the code each vector was assigned.  The codebook term moves the codes
towards the encoder outputs assigned to them (a k-means step by gradient descent); the
commitment term, weighted by :math:`\\beta = 0.25`, keeps the encoder outputs close to their
codes so they do not drift away and grow.  The reconstruction term is the Bernoulli negative
log-likelihood of the pixels (decoder logits, summed over pixels) or a squared error
:math:`\\lVert x - D(z_q) \\rVert^2` (per pixel here).  With a uniform prior over codes the
KL term of the ELBO is the constant :math:`h w \\log K` and is left out.

*EMA codebook.*  Instead of the codebook term, each code can be set to the running mean of
the encoder outputs assigned to it (van den Oord et al., appendix A.1).  With :math:`n_k` the
number of vectors assigned to code :math:`k` in a batch and :math:`s_k` their sum,

.. math:: N_k \\leftarrow d\\, N_k + (1 - d)\\, n_k, \\qquad
   m_k \\leftarrow d\\, m_k + (1 - d)\\, s_k, \\qquad e_k = m_k / \\tilde N_k,

with decay :math:`d = 0.99` and the Laplace-smoothed count
:math:`\\tilde N_k = (N_k + \\epsilon) / (N + K \\epsilon) \\cdot N`, :math:`N = \\sum_k N_k`,
which keeps the division finite for codes no vector uses.  It usually trains faster and more
stably than the gradient codebook; the codebook term is then zero.

*Codebook usage.*  Codes that no encoder output is near never receive an update and stay
dead; a model using 5 of 64 codes is a much weaker model.  Usage is measured by the fraction
of codes used and by the perplexity of the code histogram :math:`p_k` (the fraction of grid
cells assigned to code :math:`k`),

.. math:: \\mathrm{PPL} = \\exp\\Big(-\\sum_k p_k \\log p_k\\Big) \\in [1, K],

the effective number of codes: :math:`K` for uniform use, 1 when a single code is used.
Dead-code restarts re-initialise codes that have not been used for ``dead_after`` training
steps to random encoder outputs of the current batch.

*Two stages.*  The VQ-VAE alone has no generative model: its prior over code grids is
uniform, and decoding uniformly random grids gives noise.  Stage two fits an autoregressive
model (the course's GPT, :class:`CodePrior`) to the grids of the training images read in
raster order, :math:`p_\\psi(k) = \\prod_{t=1}^{hw} p_\\psi(k_t \\mid k_{<t})`; sampling a grid
from it and decoding gives new images.

Shapes: B batch, C channels, H = W = ``image_size``, D ``embed_dim``, h = w = H/4 the code
grid, K ``num_codes``, T = h*w codes per image.  Losses in nats.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import check_image_batch, check_values
from ..config import Config, check_choice, check_positive, check_range
from .gpt import GPT, GPTConfig

LIKELIHOODS = ("bernoulli", "mse")


@dataclass
class VQVAEConfig(Config):
    """What a :class:`VQVAE` is built from; JSON-serialisable, so checkpoints can rebuild it."""

    image_size: int = 28  # H = W; two stride-2 convs halve it twice, so divisible by 4
    channels: int = 1
    hidden: tuple[int, int] = (32, 64)  # channels of the two stride-2 stages: 28 -> 14 -> 7
    embed_dim: int = 16  # D, the size of a code vector
    num_codes: int = 64  # K; 7x7 grids of 64 codes reconstruct MNIST digits well
    beta: float = 0.25  # commitment weight; the paper finds 0.1-2.0 all work
    ema: bool = True  # EMA codebook updates instead of the codebook loss
    ema_decay: float = 0.99  # d of the EMA; the paper's value
    restart_dead: bool = True  # re-initialise codes unused for dead_after steps
    dead_after: int = 100  # training steps without a use before a code counts as dead
    likelihood: str = "bernoulli"  # bernoulli: decoder gives logits; mse: pixel values

    def validate(self) -> None:
        check_choice(self, "likelihood", LIKELIHOODS)
        check_positive(self, "image_size", "channels", "embed_dim", "dead_after")
        check_positive(self, "num_codes", minimum=2)
        if self.image_size % 4:
            raise ValueError(
                f"two stride-2 stages halve the image twice, so image_size must be divisible "
                f"by 4, got {self.image_size}"
            )
        if len(self.hidden) != 2 or min(self.hidden) < 1:
            raise ValueError(f"VQVAEConfig.hidden must be two positive ints, got {self.hidden}")
        check_positive(self, "beta", minimum=0)
        check_range(self, "ema_decay", 0.0, 1.0, closed="neither")

    @property
    def grid(self) -> int:
        """h = w, the side of the code grid."""
        return self.image_size // 4


# ----------------------------------------------------------------------------------------------
# codebook statistics (pure functions)


def code_histogram(codes: Tensor, num_codes: int) -> Tensor:
    """The fraction of entries of ``codes`` (any shape, ints in [0, K)) equal to each code, (K,)."""
    counts = torch.bincount(codes.reshape(-1), minlength=num_codes).float()
    return counts / counts.sum().clamp_min(1.0)


def code_perplexity(codes: Tensor, num_codes: int) -> Tensor:
    """Perplexity of the code histogram, :math:`\\exp(-\\sum_k p_k \\log p_k)`, a 0-d tensor in
    [1, K]; :math:`0 \\log 0 = 0`."""
    p = code_histogram(codes, num_codes)
    entropy = -(p * torch.log(p.clamp_min(1e-30))).sum()  # nats
    return entropy.exp()


def _check_code_histogram_args(
    train_codes: Tensor, codes: Tensor, num_codes: int, smoothing: float, grid: bool
) -> None:
    """Input checks shared by the two histogram baselines; ``grid``: (B, h, w) with one grid."""
    shape = " (B, h, w)" if grid else ""
    for name, c in (("train_codes", train_codes), ("codes", codes)):
        if c.dtype.is_floating_point or c.numel() == 0 or (grid and c.ndim < 2):
            raise ValueError(
                f"{name} must be a non-empty integer tensor{shape}, got {c.dtype} {tuple(c.shape)}"
            )
        if c.min() < 0 or c.max() >= num_codes:
            raise ValueError(f"{name} must lie in [0, {num_codes}), got [{c.min()}, {c.max()}]")
    if grid and train_codes.shape[1:] != codes.shape[1:]:
        raise ValueError(
            f"train_codes and codes must have the same grid, got {tuple(train_codes.shape[1:])} "
            f"and {tuple(codes.shape[1:])}"
        )
    if smoothing < 0:
        raise ValueError(f"smoothing must be >= 0, got {smoothing}")


def unigram_code_nll(
    train_codes: Tensor, codes: Tensor, num_codes: int, smoothing: float = 1.0
) -> float:
    """Nats per code that a *context-free* prior scores on ``codes``: the cross-entropy under the
    (add-``smoothing``) code histogram of ``train_codes``,

    .. math:: -\\frac1T \\sum_t \\log \\hat p_{k_t}, \\qquad
       \\hat p_k = \\frac{n_k + \\alpha}{N + K \\alpha},

    with :math:`n_k` the count of code k among the N training codes: the score of the best prior
    fitted to the training codes that ignores the rest of the grid (the smoothing keeps codes
    unseen in training finite). On the training codes themselves with :math:`\\alpha = 0` it is
    the histogram's entropy, the log of :func:`code_perplexity`. A prior that uses the context
    must score below it; a uniform prior scores ``log K``.

    Args:
        train_codes, codes: integer codes in [0, K), any shapes (grids (B, h, w) here).
        num_codes: K.
        smoothing: :math:`\\alpha \\ge 0`, pseudo-counts added to every code.
    """
    _check_code_histogram_args(train_codes, codes, num_codes, smoothing, grid=False)
    counts = torch.bincount(train_codes.reshape(-1).long(), minlength=num_codes).double()
    p = (counts + smoothing) / (counts.sum() + num_codes * smoothing)
    return -torch.log(p[codes.reshape(-1).long()]).mean().item()


def position_code_nll(
    train_codes: Tensor, codes: Tensor, num_codes: int, smoothing: float = 1.0
) -> float:
    """Nats per code that a prior knowing only each code's *position* scores on ``codes``: one
    (add-``smoothing``) histogram per grid position, fitted on ``train_codes``,

    .. math:: -\\frac{1}{B T} \\sum_{b, t} \\log \\hat p_t(k_{b,t}), \\qquad
       \\hat p_t(k) = \\frac{n_{t,k} + \\alpha}{N + K \\alpha},

    with :math:`n_{t,k}` the number of the N training grids whose code at position t is k. It
    reads no other code of the grid, so it is the baseline for a prior that has position
    embeddings: what such a prior gains below it comes from the other codes. Averaged over
    positions it is never above :func:`unigram_code_nll` on the training codes themselves
    (:math:`\\alpha = 0`), since conditioning on the position cannot raise the entropy.

    Args:
        train_codes: (N, h, w) integer codes in [0, K) (any trailing shape, one position each).
        codes: (B, h, w) integer codes to score, same trailing shape as ``train_codes``.
        num_codes: K.
        smoothing: :math:`\\alpha \\ge 0`, pseudo-counts added to every code at every position.
    """
    _check_code_histogram_args(train_codes, codes, num_codes, smoothing, grid=True)
    train = train_codes.reshape(train_codes.shape[0], -1).long()  # (N, T)
    scored = codes.reshape(codes.shape[0], -1).long().to(train.device)  # (B, T)
    t = train.shape[1]
    pos = torch.arange(t, device=train.device)
    counts = torch.zeros(t, num_codes, dtype=torch.float64, device=train.device)
    counts.index_put_(
        (pos.expand_as(train), train), torch.ones_like(train, dtype=torch.float64), accumulate=True
    )  # (T, K)
    p = (counts + smoothing) / (train.shape[0] + num_codes * smoothing)
    return -torch.log(p[pos.expand_as(scored), scored]).mean().item()


def codes_to_sequence(codes: Tensor) -> Tensor:
    """Code grids (B, h, w) -> sequences (B, h*w) in raster order (row by row)."""
    if codes.ndim != 3:
        raise ValueError(f"expected code grids of shape (B, h, w), got {tuple(codes.shape)}")
    return codes.reshape(codes.shape[0], -1)


def sequence_to_codes(seq: Tensor, h: int, w: int) -> Tensor:
    """Sequences (B, h*w) in raster order -> code grids (B, h, w); inverts
    :func:`codes_to_sequence`."""
    if seq.ndim != 2 or seq.shape[1] != h * w:
        raise ValueError(
            f"expected sequences of shape (B, h*w) = (B, {h * w}), got {tuple(seq.shape)}"
        )
    return seq.reshape(seq.shape[0], h, w)


def _check_codes(codes: Tensor, num_codes: int, grid: int | None = None) -> None:
    """Raise a ValueError unless ``codes`` is an integer (B, h, w) grid with ids in [0, K)."""
    if not isinstance(codes, Tensor) or codes.ndim != 3:
        got = tuple(codes.shape) if isinstance(codes, Tensor) else type(codes).__name__
        raise ValueError(f"expected code grids of shape (B, h, w), got {got}")
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise ValueError(f"expected integer code ids, got dtype {codes.dtype}")
    if grid is not None and tuple(codes.shape[1:]) != (grid, grid):
        raise ValueError(
            f"expected code grids of shape (B, {grid}, {grid}), got {tuple(codes.shape)}"
        )
    if codes.numel() and check_values() and (codes.min() < 0 or codes.max() >= num_codes):
        raise ValueError(
            f"code ids must be in [0, {num_codes}) for num_codes={num_codes}, "
            f"got values in [{int(codes.min())}, {int(codes.max())}]"
        )


# ----------------------------------------------------------------------------------------------
# the quantiser


class VectorQuantizer(nn.Module):
    """Nearest-neighbour quantisation of vector grids against a codebook of K vectors.

    With ``ema`` the codebook (K, D) is a buffer set by the EMA update of the module docstring
    (buffers ``ema_count`` (K,) and ``ema_sum`` (K, D), as if each code had been assigned its
    own initial value once), done in training mode only; otherwise it is a Parameter trained
    by the codebook loss.  ``steps_unused`` (K,) counts the training steps since each code was
    last used; with ``restart_dead`` a code reaching ``dead_after`` is moved to a random encoder
    output of the current batch.

    Under ``torch.distributed`` the EMA counts and sums are summed over processes and the
    restart vectors come from rank 0, so every process keeps the same codebook.
    """

    def __init__(
        self,
        num_codes: int,
        embed_dim: int,
        *,
        ema: bool = True,
        ema_decay: float = 0.99,
        restart_dead: bool = True,
        dead_after: int = 100,
        eps: float = 1e-5,
    ):
        super().__init__()
        if num_codes < 1 or embed_dim < 1:
            raise ValueError(
                f"num_codes and embed_dim must be >= 1, got {num_codes} and {embed_dim}"
            )
        if not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {ema_decay}")
        if dead_after < 1:
            raise ValueError(f"dead_after must be >= 1, got {dead_after}")
        self.num_codes, self.embed_dim = num_codes, embed_dim
        self.ema, self.decay, self.eps = ema, ema_decay, eps
        self.restart_dead, self.dead_after = restart_dead, dead_after
        # the classic init: small codes, so the first assignments go by direction
        init = torch.empty(num_codes, embed_dim).uniform_(-1.0 / num_codes, 1.0 / num_codes)
        if ema:
            self.register_buffer("codebook", init)
            self.register_buffer("ema_count", torch.ones(num_codes))
            self.register_buffer("ema_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        self.register_buffer("steps_unused", torch.zeros(num_codes, dtype=torch.long))

    def extra_repr(self) -> str:
        return f"num_codes={self.num_codes}, embed_dim={self.embed_dim}, ema={self.ema}"

    def _flat(self, z_e: Tensor) -> Tensor:
        """(B, D, H, W) -> (B*H*W, D), one row per grid cell in raster order."""
        if z_e.ndim != 4 or z_e.shape[1] != self.embed_dim:
            raise ValueError(
                f"expected encoder outputs of shape (B, D, H, W) with D = {self.embed_dim}, "
                f"got {tuple(z_e.shape)}"
            )
        return z_e.permute(0, 2, 3, 1).reshape(-1, self.embed_dim)

    def nearest(self, flat: Tensor) -> Tensor:
        """Index of the nearest code by squared distance, vectors (M, D) -> (M,) int64.

        :math:`\\lVert z - e_k \\rVert^2 = \\lVert z \\rVert^2 - 2 z \\cdot e_k + \\lVert e_k
        \\rVert^2`; computed in float32, since bf16 distances would tie and flip codes."""
        with torch.autocast(flat.device.type, enabled=False):
            z, e = flat.float(), self.codebook.float()
            dist2 = z.pow(2).sum(1, keepdim=True) - 2 * z @ e.T + e.pow(2).sum(1)[None, :]  # (M, K)
            return dist2.argmin(dim=1)

    def quantize(self, z_e: Tensor) -> Tensor:
        """Encoder outputs (B, D, H, W) -> codes (B, H, W) int64, with no update of anything."""
        b, _, h, w = z_e.shape
        return self.nearest(self._flat(z_e.detach())).view(b, h, w)

    def lookup(self, codes: Tensor) -> Tensor:
        """Code grids (B, H, W) -> their code vectors (B, D, H, W)."""
        _check_codes(codes, self.num_codes)
        return F.embedding(codes.long(), self.codebook).permute(0, 3, 1, 2)

    def forward(self, z_e: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Quantise encoder outputs z_e (B, D, H, W) -> (z_q_st, codes, losses).

        ``z_q_st = z_e + sg[z_q - z_e]`` (B, D, H, W) equals the nearest codes in value and
        passes gradients straight through to z_e; ``codes`` (B, H, W) int64;
        ``losses["codebook"]`` is :math:`\\mathrm{mean}\\,(\\mathrm{sg}[z_e] - z_q)^2` (a zero
        tensor with ``ema``) and ``losses["commitment"]`` is
        :math:`\\mathrm{mean}\\,(z_e - \\mathrm{sg}[z_q])^2`, means over all B*D*H*W entries.
        In training mode it also updates the EMA codebook, the usage counters and restarts
        dead codes, after computing its outputs with the codebook as it was.
        """
        b, _, h, w = z_e.shape
        flat = self._flat(z_e)  # (M, D), M = B*H*W
        idx = self.nearest(flat.detach())  # (M,)
        with torch.autocast(z_e.device.type, enabled=False):
            z = z_e.float()
            z_q = F.embedding(idx, self.codebook.float()).view(b, h, w, -1).permute(0, 3, 1, 2)
            commitment = F.mse_loss(z, z_q.detach())
            if self.ema:
                codebook = z.new_zeros(())
            else:
                codebook = F.mse_loss(z_q, z.detach())
            z_q_st = z + (z_q - z).detach()  # straight-through: value z_q, gradient to z_e
        if self.training:
            self._update(flat.detach().float(), idx)
        return z_q_st, idx.view(b, h, w), {"codebook": codebook, "commitment": commitment}

    @torch.no_grad()
    def _update(self, flat: Tensor, idx: Tensor) -> None:
        """EMA step, usage counters and dead-code restarts for one batch of vectors (M, D)."""
        distributed = dist.is_available() and dist.is_initialized()
        counts = torch.bincount(idx, minlength=self.num_codes).float()  # (K,) n_k
        if self.ema:
            sums = torch.zeros_like(self.ema_sum).index_add_(0, idx, flat)  # (K, D) s_k
            if distributed:
                dist.all_reduce(counts)
                dist.all_reduce(sums)
            d = self.decay
            self.ema_count.mul_(d).add_(counts, alpha=1 - d)
            self.ema_sum.mul_(d).add_(sums, alpha=1 - d)
            n = self.ema_count.sum()
            smoothed = (self.ema_count + self.eps) / (n + self.num_codes * self.eps) * n
            self.codebook.copy_(self.ema_sum / smoothed[:, None])
        elif distributed:
            dist.all_reduce(counts)
        self.steps_unused.add_(1).masked_fill_(counts > 0, 0)
        if not self.restart_dead:
            return
        # Candidates for every code, used only where a code is dead: no host sync per step.
        pick = torch.randint(len(flat), (self.num_codes,), device=flat.device)
        candidates = flat[pick].to(self.codebook.dtype)  # (K, D)
        if distributed:
            dist.broadcast(candidates, src=0)
        dead = self.steps_unused >= self.dead_after  # (K,)
        self.codebook.data.copy_(torch.where(dead[:, None], candidates, self.codebook.data))
        if self.ema:
            self.ema_sum.copy_(torch.where(dead[:, None], candidates, self.ema_sum))
            self.ema_count.masked_fill_(dead, 1.0)
        self.steps_unused.masked_fill_(dead, 0)

    def perplexity(self, codes: Tensor) -> float:
        """Perplexity of the code histogram of ``codes`` (any shape): K if uniform, 1 if one code."""
        return float(code_perplexity(codes, self.num_codes))

    def usage(self, codes: Tensor) -> float:
        """Fraction of the K codes that occur in ``codes`` (any shape), in [0, 1]."""
        counts = torch.bincount(codes.reshape(-1), minlength=self.num_codes)
        return float((counts > 0).float().mean())


# ----------------------------------------------------------------------------------------------
# the autoencoder


class VQVAE(nn.Module):
    """A small convolutional VQ-VAE: image (B, C, H, W) -> code grid (B, H/4, W/4) -> image.

    Encoder: conv 4x4 stride 2 -> ReLU -> conv 4x4 stride 2 -> ReLU -> conv 3x3 -> ReLU ->
    conv 1x1 to ``embed_dim`` channels; decoder: its mirror with transposed convs.  The decoder
    gives logits (Bernoulli) or pixel values (MSE).  ``loss(batch)`` is what
    :class:`genai_course.train.Trainer` minimises.
    """

    def __init__(self, config: VQVAEConfig | None = None):
        super().__init__()
        self.config = c = config or VQVAEConfig()
        c1, c2 = c.hidden
        # kernel 4, stride 2, padding 1 halves (and its transpose doubles) any even size
        self.encoder = nn.Sequential(
            nn.Conv2d(c.channels, c1, 4, stride=2, padding=1),
            nn.ReLU(),  # (B, c1, H/2, W/2)
            nn.Conv2d(c1, c2, 4, stride=2, padding=1),
            nn.ReLU(),  # (B, c2, h, w)
            nn.Conv2d(c2, c2, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c2, c.embed_dim, 1),  # (B, D, h, w): z_e
        )
        self.quantizer = VectorQuantizer(
            c.num_codes,
            c.embed_dim,
            ema=c.ema,
            ema_decay=c.ema_decay,
            restart_dead=c.restart_dead,
            dead_after=c.dead_after,
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(c.embed_dim, c2, 3, padding=1),
            nn.ReLU(),  # (B, c2, h, w)
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1),
            nn.ReLU(),  # (B, c1, H/2, W/2)
            nn.ConvTranspose2d(c1, c.channels, 4, stride=2, padding=1),  # (B, C, H, W)
        )

    @property
    def grid(self) -> int:
        """h = w, the side of the code grid."""
        return self.config.grid

    # -- checks -------------------------------------------------------------------------------

    def _check_images(self, x: Tensor) -> None:
        c = self.config
        # out-of-range pixels would give a Bernoulli decoder a meaningless loss without an error
        check_image_batch(
            x, (c.channels, c.image_size, c.image_size), unit_range=c.likelihood == "bernoulli"
        )

    # -- the networks ---------------------------------------------------------------------------

    def encode(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) in [0, 1] -> code grids (B, h, w) int64.  Updates nothing, in
        either mode."""
        self._check_images(x)
        return self.quantizer.quantize(self.encoder(x))

    def mean_image(self, out: Tensor) -> Tensor:
        """Decoder output -> images in [0, 1]: sigmoid of logits (Bernoulli) or clamped
        values (MSE)."""
        return torch.sigmoid(out) if self.config.likelihood == "bernoulli" else out.clamp(0, 1)

    def decode_codes(self, codes: Tensor) -> Tensor:
        """Code grids (B, h, w) of ids in [0, K) -> images (B, C, H, W) in [0, 1]."""
        _check_codes(codes, self.config.num_codes, self.grid)
        return self.mean_image(self.decoder(self.quantizer.lookup(codes)))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Images (B, C, H, W) -> (decoder output (B, C, H, W), codes (B, h, w), the
        quantiser's losses); the decoder output is logits (Bernoulli) or pixel values (MSE).
        In training mode the quantiser updates its codebook statistics."""
        self._check_images(x)
        z_e = self.encoder(x)  # (B, D, h, w)
        z_q, codes, losses = self.quantizer(z_e)
        return self.decoder(z_q), codes, losses

    def loss(
        self, batch: Tensor | tuple[Tensor, ...] | list[Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The VQ-VAE loss of a batch ``x`` or ``(x, y)`` (labels ignored):

        .. math:: \\mathcal L = \\mathrm{recon}
           + s\\, \\mathrm{mean}\\,(\\mathrm{sg}[z_e] - z_q)^2
           + \\beta\\, s\\, \\mathrm{mean}\\,(z_e - \\mathrm{sg}[z_q])^2.

        Bernoulli: recon is :math:`-\\frac1B \\sum_b \\log p_\\theta(x_b \\mid z_q)`, nats per
        image summed over pixels, and :math:`s = D h w`, so the two quantisation terms are
        squared norms summed over the code grid as well, as in the paper.  MSE: recon is the
        per-pixel mean :math:`\\mathrm{mean}\\,(x - D(z_q))^2` and :math:`s = 1`, every term a
        mean.  The codebook term is 0 with an EMA codebook.

        Logs ``recon``, ``codebook`` and ``commitment`` (the latter two with the factor s but
        without :math:`\\beta`, so that total = recon + codebook + beta * commitment) and
        ``perplexity`` of the batch's codes.
        """
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        out, codes, vq = self(x)
        # float32 even under bf16 autocast: the sums over 784 pixels lose digits
        out, x = out.float(), x.float()
        c = self.config
        if c.likelihood == "bernoulli":
            recon = F.binary_cross_entropy_with_logits(out, x, reduction="none").flatten(1)
            recon = recon.sum(1).mean()
            scale = c.embed_dim * self.grid**2
        else:
            recon = F.mse_loss(out, x)
            scale = 1
        codebook, commitment = scale * vq["codebook"], scale * vq["commitment"]
        total = recon + codebook + c.beta * commitment
        logs = {
            "recon": recon.detach(),
            "codebook": codebook.detach(),
            "commitment": commitment.detach(),
            "perplexity": code_perplexity(codes, c.num_codes),
        }
        return total, logs

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) -> their reconstructions (B, C, H, W) in [0, 1], through the
        codes; updates nothing."""
        return self.decode_codes(self.encode(x))


@torch.no_grad()
def encode_dataset(vqvae: VQVAE, x: Tensor, batch_size: int = 500) -> Tensor:
    """Code grids (N, h, w) int64 of images x (N, C, H, W), on x's device, computed
    ``batch_size`` images at a time on the model's device (the training data of the prior)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(vqvae.parameters()).device
    chunks = [vqvae.encode(x[i : i + batch_size].to(device)) for i in range(0, len(x), batch_size)]
    if not chunks:
        g = vqvae.grid
        return torch.zeros(0, g, g, dtype=torch.long, device=x.device)
    return torch.cat(chunks).to(x.device)


# ----------------------------------------------------------------------------------------------
# the prior over code grids


@dataclass
class CodePriorConfig(Config):
    """What a :class:`CodePrior` is built from; JSON-serialisable."""

    num_codes: int = 64  # K of the VQ-VAE whose grids it models
    grid: int = 7  # h = w of the code grid; sequences of h*w codes
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128  # must be divisible by n_head
    dropout: float = 0.1  # ~4,000 grids of 49 codes overfit a 4-layer GPT quickly

    def validate(self) -> None:
        check_positive(self, "num_codes", "grid", "n_layer", "n_head", "n_embd")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        check_range(self, "dropout", 0.0, 1.0)


class _StartMaskedGPT(GPT):
    """The course's GPT whose output never predicts the start token (an input-only symbol,
    the last id): its logit is -inf, so the distribution is over the K codes alone, at
    training and at sampling time."""

    def forward(
        self, idx: Tensor, cache=None, return_hidden: bool = False
    ) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        out, cache = super().forward(idx, cache, return_hidden)
        if return_hidden:
            return out, cache
        is_start = torch.arange(out.shape[-1], device=out.device) == out.shape[-1] - 1
        return out.masked_fill(is_start, float("-inf")), cache


class CodePrior(nn.Module):
    """An autoregressive prior over code grids: the course's GPT over raster-order sequences.

    Vocabulary: the K codes plus a start token (id K) that begins every sequence, so the
    first code is predicted from the start token alone; ``block_size = h*w + 1``.
    """

    def __init__(self, config: CodePriorConfig | None = None):
        super().__init__()
        self.config = c = config or CodePriorConfig()
        self.start_id = c.num_codes
        self.gpt = _StartMaskedGPT(
            GPTConfig(
                vocab_size=c.num_codes + 1,
                block_size=c.grid * c.grid + 1,
                n_layer=c.n_layer,
                n_head=c.n_head,
                n_embd=c.n_embd,
                dropout=c.dropout,
            )
        )

    def loss(self, batch: Tensor | tuple[Tensor] | list[Tensor]) -> Tensor:
        """Next-code cross-entropy in nats per code of code grids (B, h, w) (or a 1-tuple):

        .. math:: -\\frac{1}{B\\,T} \\sum_{b=1}^B \\sum_{t=1}^T \\log p_\\psi(k_{b,t} \\mid
           \\text{start}, k_{b,<t}), \\qquad T = h w,

        with :math:`k_b` the raster-order sequence of grid b.  :math:`\\log K` for a uniform
        prior; divide by :math:`\\ln 2` for bits per code.
        """
        codes = batch[0] if isinstance(batch, (tuple, list)) else batch
        _check_codes(codes, self.config.num_codes, self.config.grid)
        seq = codes_to_sequence(codes.long())  # (B, T)
        start = seq.new_full((len(seq), 1), self.start_id)
        inputs = torch.cat([start, seq[:, :-1]], dim=1)  # (B, T): start, k_1, ..., k_{T-1}
        logits, _ = self.gpt(inputs)  # (B, T, K + 1)
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), seq.reshape(-1))

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``n`` code grids (n, h, w) int64 in [0, K), drawn code by code with
        :meth:`GPT.generate` (decode them with :meth:`VQVAE.decode_codes`)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        g = self.config.grid
        device = self.gpt.wte.weight.device
        if n == 0:
            return torch.zeros(0, g, g, dtype=torch.long, device=device)
        start = torch.full((n, 1), self.start_id, dtype=torch.long, device=device)
        seq = self.gpt.generate(
            start, max_new=g * g, temperature=temperature, top_k=top_k, generator=generator
        )
        return sequence_to_codes(seq[:, 1:], g, g)


class VQVAEGenerator(nn.Module):
    """A VQ-VAE and a prior over its code grids as one generator: the sampling protocol
    ``sample(n, *, labels=None, generator=None, ...)`` of every course generator.

    A grid of codes is drawn from the prior (:meth:`CodePrior.sample`), then decoded to pixels
    by the VQ-VAE's decoder (:meth:`VQVAE.decode_codes`).
    """

    def __init__(self, vqvae: VQVAE, prior: CodePrior):
        super().__init__()
        if (
            prior.config.num_codes != vqvae.config.num_codes
            or prior.config.grid != vqvae.config.grid
        ):
            raise ValueError(
                f"the prior models {prior.config.grid}x{prior.config.grid} grids of "
                f"{prior.config.num_codes} codes, the VQ-VAE has {vqvae.config.grid}x"
                f"{vqvae.config.grid} grids of {vqvae.config.num_codes}"
            )
        self.vqvae, self.prior = vqvae, prior

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        labels: None = None,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
    ) -> Tensor:
        """``n`` images (n, C, H, W) in [0, 1]; the model is unconditional (``labels=None``)."""
        if labels is not None:
            raise ValueError("a VQ-VAE with its code prior is unconditional: pass labels=None")
        codes = self.prior.sample(n, temperature=temperature, top_k=top_k, generator=generator)
        return self.vqvae.decode_codes(codes)


__all__ = [
    "LIKELIHOODS",
    "CodePrior",
    "CodePriorConfig",
    "VQVAE",
    "VQVAEConfig",
    "VQVAEGenerator",
    "VectorQuantizer",
    "code_histogram",
    "code_perplexity",
    "codes_to_sequence",
    "encode_dataset",
    "sequence_to_codes",
    "position_code_nll",
    "unigram_code_nll",
]
