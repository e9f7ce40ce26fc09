import pytest
import torch

from genai_course.budget import PROFILE_ENV, current_profile, pick, resolve_device


def test_profile_follows_the_environment_variable(monkeypatch):
    monkeypatch.setenv(PROFILE_ENV, "full")
    assert current_profile() == "full"
    assert pick(cpu=1, full=2, smoke=3) == 2
    monkeypatch.setenv(PROFILE_ENV, "smoke")
    assert pick(cpu=1, full=2, smoke=3) == 3
    assert pick(cpu=1, full=2) == 1  # smoke falls back to cpu


def test_profile_defaults_to_the_device(monkeypatch):
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    expected = "full" if torch.cuda.is_available() else "cpu"
    assert current_profile() == expected


def test_bad_profile_is_named(monkeypatch):
    monkeypatch.setenv(PROFILE_ENV, "huge")
    with pytest.raises(ValueError, match="must be one of .*'huge'"):
        current_profile()
    with pytest.raises(ValueError, match="profile must be one of"):
        pick(cpu=1, full=2, profile="tiny")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            resolve_device("cuda")
