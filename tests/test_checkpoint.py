"""Atomic checkpoint writes and the shipped-checkpoint manifest."""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from torch import nn

from genai_course.checkpoint import atomic_write, load_checkpoint, save_checkpoint, sha256_file
from genai_course.models import GaussianMixture
from genai_course.pretrained import (
    PretrainedError,
    list_pretrained,
    load_pretrained,
    read_manifest,
    save_pretrained,
    verify,
)


def test_a_failed_write_leaves_the_previous_checkpoint_and_no_temporary_file(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1, "w": torch.ones(3)}, path)

    def crash(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


WRITER = textwrap.dedent("""
    import sys, torch
    from genai_course.checkpoint import save_checkpoint
    big = torch.randn(4_000_000)  # 16 MB: each save takes a while, so the kill lands mid-write
    step = 0
    while True:
        step += 1
        save_checkpoint({"step": step, "w": big + step}, sys.argv[1])
        print(step, flush=True)
""")


def test_atomic_save_survives_a_killed_writer(tmp_path):
    path = tmp_path / "last.pt"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        # wait for two complete saves, then kill it at an arbitrary point of a later one
        for _ in range(2):
            assert proc.stdout.readline().strip()
        time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    state = load_checkpoint(path)
    assert state["step"] >= 2
    torch.testing.assert_close(
        state["w"][:5] - state["step"], state["w"][5:10] * 0 + state["w"][:5] - state["step"]
    )
    assert torch.isfinite(state["w"]).all() and state["w"].numel() == 4_000_000


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope.pt")


def _tiny_model():
    return GaussianMixture(generator=torch.Generator().manual_seed(0))


def test_save_pretrained_round_trip(tmp_path):
    model = _tiny_model()
    entry = save_pretrained(
        model, "tiny", tmp_path, command="genai-course train tiny", metrics={"nll": 1.0}
    )
    assert entry["sha256"] == sha256_file(tmp_path / "tiny.safetensors")
    assert list_pretrained(tmp_path) == ["tiny"]
    loaded = load_pretrained("tiny", folder=tmp_path)
    x = torch.randn(7, 2)
    torch.testing.assert_close(loaded.log_prob(x), model.log_prob(x))
    assert (
        json.loads((tmp_path / "manifest.json").read_text())["tiny"]["command"]
        == "genai-course train tiny"
    )


def test_save_pretrained_leaves_the_callers_model_on_its_device(tmp_path, monkeypatch):
    moved = []
    real_cpu = torch.nn.Module.cpu
    monkeypatch.setattr(torch.nn.Module, "cpu", lambda self: moved.append(self) or real_cpu(self))
    model = _tiny_model()
    save_pretrained(model, "tiny", tmp_path, command="c", metrics={})
    assert moved and all(m is not model for m in moved)  # a copy went to the CPU, not the model


def test_loading_a_checkpoint_leaves_the_global_random_state_alone(tmp_path):
    save_pretrained(_tiny_model(), "tiny", tmp_path, command="c", metrics={})
    state = torch.get_rng_state()
    load_pretrained("tiny", folder=tmp_path)
    assert torch.equal(state, torch.get_rng_state())


def test_altered_checkpoint_is_rejected_by_its_hash(tmp_path):
    save_pretrained(_tiny_model(), "tiny", tmp_path, command="genai-course train tiny", metrics={})
    f = tmp_path / "tiny.safetensors"
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 0xFF
    f.write_bytes(bytes(raw))
    with pytest.raises(PretrainedError, match="sha256 .* altered or truncated"):
        load_pretrained("tiny", folder=tmp_path)
    f.unlink()
    with pytest.raises(PretrainedError, match="missing; rebuild it with: genai-course train tiny"):
        verify("tiny", tmp_path)
    with pytest.raises(PretrainedError, match="no pretrained checkpoint 'other'"):
        load_pretrained("other", folder=tmp_path)


def test_manifest_only_builds_genai_course_classes(tmp_path):
    save_pretrained(_tiny_model(), "tiny", tmp_path, command="c", metrics={})
    manifest = read_manifest(tmp_path)
    manifest["tiny"]["class"] = "os:system"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PretrainedError, match="only genai_course classes"):
        load_pretrained("tiny", folder=tmp_path)


def test_every_shipped_checkpoint_verifies_and_records_its_command():
    names = list_pretrained()
    assert {"digit-classifier", "gmm-ring"} <= set(names)
    for name in names:
        verify(name)
        entry = read_manifest()[name]
        assert entry["command"].startswith("genai-course train ")
        assert entry["metrics"], name
        for key, value in entry["metrics"].items():
            if key in ("device", "precision"):
                assert isinstance(value, str), (name, key, value)
                continue
            # numbers a table can print (a list of them for per-trainer step counts): no NaN,
            # no infinity, no missing value
            for v in value if isinstance(value, list) else [value]:
                assert isinstance(v, (int, float)) and not isinstance(v, bool), (name, key)
                assert math.isfinite(v), (name, key, value)


def test_shipped_classifier_reaches_97_percent_on_the_test_digits():
    from genai_course.data import load_mnist

    x, y = load_mnist("test")
    clf = load_pretrained("digit-classifier")
    assert isinstance(clf, nn.Module) and not clf.training
    assert clf.accuracy(x, y) >= 0.97
