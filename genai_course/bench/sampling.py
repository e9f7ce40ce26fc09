"""Sampling speed: DDPM against DDIM, and GPT generation with and without the KV cache."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..budget import resolve_device
from .timing import check_positive, header, sync, timed
from .workloads import GPT_VOCAB


def bench_sampling(
    *,
    pretrained: bool = True,
    n_images: int = 4,
    ddim_steps: Sequence[int] = (10, 50),
    ddpm: bool = True,
    new_tokens: int = 200,
    prompt: str = "The ",
    repeats: int = 1,
    profile: str = "smoke",
    timesteps: int = 1000,
    device: str = "auto",
    seed: int = 0,
) -> dict[str, Any]:
    """Images per second of DDPM (all T steps) against DDIM with ``ddim_steps`` steps, and
    tokens per second of GPT generation with and without the KV cache.

    With ``pretrained`` the models are the shipped ``diffusion-mnist`` and ``gpt-pydocs``;
    otherwise fresh ones with ``profile``'s recipe sizes and ``timesteps`` diffusion steps
    (speed does not depend on training).  Generation is greedy from ``prompt`` (batch 1),
    and ``cache_matches`` says whether the cached and uncached runs produced the same text.
    """
    from dataclasses import replace

    from ..models.diffusion import Diffusion
    from ..models.gpt import GPT
    from ..models.unet import UNet
    from ..pretrained import load_pretrained
    from ..recipes import diffusion_settings, gpt_pydocs_settings

    check_positive(n_images=n_images, repeats=repeats, new_tokens=new_tokens)
    dev = resolve_device(device)
    if pretrained:
        diffusion = load_pretrained("diffusion-mnist", device=dev)
        gpt = load_pretrained("gpt-pydocs", device=dev)
    else:
        torch.manual_seed(seed)
        st = diffusion_settings(profile)
        diff_cfg = replace(st.diffusion, timesteps=timesteps)
        diffusion = Diffusion(UNet(st.unet), diff_cfg).to(dev).eval()
        gpt_cfg = replace(gpt_pydocs_settings(profile).model, vocab_size=GPT_VOCAB)
        gpt = GPT(gpt_cfg).to(dev)
    out = header(
        "sampling",
        dev,
        pretrained=pretrained,
        n_images=n_images,
        timesteps=diffusion.T,
        new_tokens=new_tokens,
        repeats=repeats,
    )
    rows = []

    medians: dict[tuple, float] = {}  # unrounded, for the ratios

    def sampler_row(sampler: str, steps: int, fn: Callable[[torch.Generator], Any]) -> None:
        secs = []
        for r in range(repeats):
            g = torch.Generator(device=dev).manual_seed(seed + r)
            secs.append(timed(lambda g=g: fn(g), 1, dev))
        s = medians[(sampler, steps)] = statistics.median(secs)
        rows.append(
            {
                "model": "diffusion",
                "sampler": sampler,
                "steps": steps,
                "seconds": round(s, 4),
                "seconds_all": [round(v, 4) for v in secs],
                "images_per_s": round(n_images / s, 3),
                "ms_per_network_eval": round(s / steps * 1e3, 3),
            }
        )

    diffusion.ddim_sample(1, steps=2)  # warm-up: allocator, first-call costs
    gpt.generate(torch.zeros(1, 1, dtype=torch.long, device=dev), max_new=2)
    for k in ddim_steps:
        sampler_row("ddim", k, lambda g, k=k: diffusion.ddim_sample(n_images, steps=k, generator=g))
    if ddpm:
        sampler_row("ddpm", diffusion.T, lambda g: diffusion.ddpm_sample(n_images, generator=g))

    if gpt.config.vocab:
        ids = gpt.tokenizer.encode(prompt).to(dev)[None]
    else:  # an untrained model has no tokenizer: as many token 0s as the prompt has characters
        ids = torch.zeros(1, len(prompt), dtype=torch.long, device=dev)
    texts = {}
    for cache in (True, False):
        secs = []
        for _ in range(repeats):
            start = time.perf_counter()
            texts[cache] = gpt.generate(ids, max_new=new_tokens, greedy=True, use_cache=cache)
            sync(dev)
            secs.append(time.perf_counter() - start)
        s = medians[("gpt", cache)] = statistics.median(secs)
        rows.append(
            {
                "model": "gpt",
                "kv_cache": cache,
                "new_tokens": new_tokens,
                "seconds": round(s, 4),
                "seconds_all": [round(v, 4) for v in secs],
                "tokens_per_s": round(new_tokens / s, 2),
            }
        )
    speed = {}
    if ddpm:
        ddpm_s = medians[("ddpm", diffusion.T)]
        speed = {f"ddim{k}_vs_ddpm": round(ddpm_s / medians[("ddim", k)], 2) for k in ddim_steps}
    speed["kv_cache"] = round(medians[("gpt", False)] / medians[("gpt", True)], 2)
    out.update(
        cache_matches=bool(torch.equal(texts[True], texts[False])), speedup=speed, results=rows
    )
    return out


def summarise_sampling(result: dict[str, Any]) -> str:
    """One line: the speed-ups, and whether the cache left the text unchanged."""
    parts = [f"{k} {v:.3g}x" for k, v in result["speedup"].items()]
    return (
        f"sampling speed-ups on {result['device']}: "
        + ", ".join(parts)
        + (f"; cached and uncached text equal: {result['cache_matches']}")
    )
