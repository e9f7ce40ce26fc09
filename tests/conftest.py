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
