import os

import pytest
import torch

# Unit tests must be quick and deterministic whatever the machine: the smallest budget, 2 threads.
os.environ.setdefault("GENAI_COURSE_PROFILE", "smoke")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
