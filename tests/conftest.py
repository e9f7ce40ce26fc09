import os

import pytest
import torch

# Unit tests must be quick and deterministic whatever the machine: the smallest budget, and one
# intra-op thread. Their tensors are small, so a second thread only adds synchronisation, and on
# a busy 2-core machine waiting for it made some tests 20-1000x slower.
os.environ.setdefault("GENAI_COURSE_PROFILE", "smoke")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_unet():
    """Factory of U-Nets small enough for unit tests, in eval mode: two levels (8x8 -> 4x4 for
    8x8 inputs), attention at the lower one, no dropout; keyword arguments override the
    UNetConfig fields."""
    from genai_course.models.unet import UNet, UNetConfig

    def make(**kw) -> UNet:
        cfg = dict(
            base_width=8,
            channel_mults=(1, 2),
            attention_levels=(1,),
            attention_heads=2,
            norm_groups=4,
            dropout=0.0,
        )
        return UNet(UNetConfig(**{**cfg, **kw})).eval()

    return make
