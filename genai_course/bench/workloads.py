"""The workloads the benchmarks time: the course's conv model and its transformer at a
profile's size, and one AdamW training step of a model on a fixed batch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .flops import gpt_flops_per_token

WORKLOADS = ("unet", "gpt")
GPT_VOCAB = 103  # characters of the Python-reference corpus (recipes.python_docs_tokenizer)


@dataclass
class Workload:
    """One of the course's models with a synthetic training batch, for timing training steps.

    ``build()`` returns a fresh model (the same initial weights every call);
    ``batch(b, device)`` a training batch of ``b`` examples on ``device``; ``loss_fn(model,
    batch)`` the scalar loss.  One example holds ``units_per_example`` of ``unit`` (one image;
    ``T`` tokens).  ``flops_per_example`` is the analytic training cost (forward and backward)
    where one is known (the GPT), else None.
    """

    name: str
    build: Callable[[], nn.Module]
    batch: Callable[[int, torch.device], Any]
    loss_fn: Callable[[nn.Module, Any], Tensor]
    unit: str
    units_per_example: int
    conv: bool
    default_batch: int
    config: dict[str, Any]
    flops_per_example: float | None = None


def _diffusion_loss(model: nn.Module, batch: Any) -> Tensor:
    return model.loss(batch)[0]


def _gpt_loss(model: nn.Module, batch: Any) -> Tensor:
    return model.loss(batch)


def course_workload(name: str, profile: str = "cpu", seed: int = 0) -> Workload:
    """The ``"unet"`` (the MNIST diffusion model of chapters 12-13: its U-Net inside
    :class:`~genai_course.models.diffusion.Diffusion`, 28x28 images) or the ``"gpt"`` (the
    char-level GPT of chapter 09, full-length windows) with the sizes the recipes use for
    ``profile`` (:func:`~genai_course.recipes.diffusion_settings`,
    :func:`~genai_course.recipes.gpt_pydocs_settings`).  Inputs are random: the time of a step
    does not depend on the values."""
    from dataclasses import replace

    from ..models.diffusion import Diffusion
    from ..models.gpt import GPT, GPTConfig
    from ..models.unet import UNet
    from ..recipes import diffusion_settings, gpt_pydocs_settings

    if name == "unet":
        st = diffusion_settings(profile)
        unet_cfg = st.unet

        def build_unet() -> nn.Module:
            with torch.random.fork_rng(devices=[]):  # the caller's generator stays untouched
                torch.manual_seed(seed)
                return Diffusion(UNet(unet_cfg), st.diffusion)

        def unet_batch(b: int, device: torch.device) -> tuple[Tensor, Tensor]:
            g = torch.Generator().manual_seed(seed)
            x = torch.rand(b, 1, 28, 28, generator=g)
            return x.to(device), torch.randint(0, 10, (b,), generator=g).to(device)

        return Workload(
            "unet",
            build_unet,
            unet_batch,
            _diffusion_loss,
            unit="images",
            units_per_example=1,
            conv=True,
            default_batch=st.train.batch_size,
            config=unet_cfg.to_dict(),
        )
    if name == "gpt":
        gst = gpt_pydocs_settings(profile)
        gpt_cfg = replace(gst.model, vocab_size=GPT_VOCAB)
        t = gpt_cfg.block_size

        def build_gpt() -> nn.Module:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return GPT(GPTConfig(**gpt_cfg.to_dict()))

        def gpt_batch(b: int, device: torch.device) -> tuple[Tensor, Tensor]:
            g = torch.Generator().manual_seed(seed)
            idx = torch.randint(0, GPT_VOCAB, (b, t + 1), generator=g).to(device)
            return idx[:, :-1], idx[:, 1:]

        n_params = build_gpt().num_params(embeddings=False)
        per_token = gpt_flops_per_token(n_params, gpt_cfg.n_layer, gpt_cfg.n_embd, t)
        return Workload(
            "gpt",
            build_gpt,
            gpt_batch,
            _gpt_loss,
            unit="tokens",
            units_per_example=t,
            conv=False,
            default_batch=gst.train.batch_size,
            config={k: v for k, v in gpt_cfg.to_dict().items() if k != "vocab"},
            flops_per_example=per_token * t,
        )
    raise ValueError(f"workload must be one of {WORKLOADS}, got {name!r}")


def profile_for(profile: str | None, dev: torch.device) -> str:
    """Model sizes: the given profile, else ``full`` on CUDA and ``cpu`` elsewhere."""
    return profile or ("full" if dev.type == "cuda" else "cpu")


#: Autocast dtypes of :func:`train_step`'s ``precision`` (fp32: no autocast).
STEP_PRECISIONS = ("fp32", "bf16", "fp16")


def train_step(
    model: nn.Module,
    batch: Any,
    loss_fn: Callable[[nn.Module, Any], Tensor],
    device: torch.device,
    *,
    precision: str = "fp32",
    compile: bool = False,
    optimizer: str = "auto",
) -> Callable[[], Tensor]:
    """A function doing one AdamW training step of ``model`` on ``batch`` (zero the gradients,
    forward under autocast, backward, update) and returning the loss.  ``precision`` is
    ``"fp32"``, ``"bf16"`` (autocast) or ``"fp16"`` (autocast with a gradient scaler, as the
    Trainer runs it); ``compile`` wraps the loss computation in :func:`torch.compile`;
    ``optimizer`` is ``"auto"`` (fused on CUDA, torch's default elsewhere), ``"for-loop"``,
    ``"foreach"`` or ``"fused"``."""
    if precision not in STEP_PRECISIONS:
        raise ValueError(f"precision must be one of {STEP_PRECISIONS}, got {precision!r}")
    opt = adamw(list(model.parameters()), optimizer if optimizer != "auto" else None, device)

    def loss_of(b: Any) -> Tensor:
        return loss_fn(model, b)

    forward = torch.compile(loss_of) if compile else loss_of

    if precision == "fp16":
        scaler = torch.amp.GradScaler(device.type)

        def scaled_step() -> Tensor:
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.float16):
                loss = forward(batch)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            return loss

        return scaled_step

    def step() -> Tensor:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = forward(batch)
        loss.backward()
        opt.step()
        return loss

    return step


def adamw(params: list[Tensor], impl: str | None, device: torch.device) -> torch.optim.AdamW:
    """AdamW (lr 1e-4, weight decay 0.01) with implementation ``impl``: ``"for-loop"``,
    ``"foreach"``, ``"fused"`` or ``"default"`` (torch's choice); None is fused on CUDA and
    torch's default elsewhere."""
    if impl is None:
        impl = "fused" if device.type == "cuda" else "default"
    kw = {
        "for-loop": {"foreach": False},
        "foreach": {"foreach": True},
        "fused": {"fused": True},
        "default": {},
    }[impl]
    return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, **kw)


def channels_last(batch: Any) -> Any:
    """``batch`` with its 4-D tensors (images) in the channels-last memory format."""
    if isinstance(batch, Tensor):
        return batch.contiguous(memory_format=torch.channels_last) if batch.ndim == 4 else batch
    return type(batch)(channels_last(b) for b in batch)
