"""``genai-course sample NAME`` for every shipped generator, run as a user runs it."""

from __future__ import annotations

import json
import wave

import pytest
import torch
from safetensors.torch import load_file

from genai_course.cli import main
from genai_course.generators import DIGIT_GENERATORS, sampleable
from genai_course.pretrained import list_pretrained

CLASSIFIERS = {"digit-classifier", "digit-classifier-robust"}


def _run(capsys, *argv: str) -> tuple[int, dict | None, str]:
    code = main(["sample", *argv])
    out, err = capsys.readouterr()
    return code, (json.loads(out.strip().splitlines()[-1]) if code == 0 else None), err


def test_every_generative_checkpoint_is_sampleable():
    assert set(list_pretrained()) - CLASSIFIERS <= set(sampleable())


@pytest.mark.parametrize("name", sorted(DIGIT_GENERATORS) + ["vqvae-prior"])
def test_digit_generators_write_a_grid_and_a_tensor(tmp_path, capsys, name):
    fast = ["--steps", "2"] if "diffusion" in name else []
    code, record, err = _run(capsys, name, "--n", "4", "--out", str(tmp_path / "x.png"), *fast)
    assert code == 0, err
    assert (tmp_path / "x.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, record, err = _run(
        capsys, name, "--n", "3", "--seed", "5", "--out", str(tmp_path / "x.safetensors"), *fast
    )
    assert code == 0, err
    x = load_file(str(tmp_path / "x.safetensors"))["samples"]
    assert x.shape == (3, 1, 28, 28) and record["shape"] == [3, 1, 28, 28]
    assert 0 <= x.min() and x.max() <= 1 and x.std() > 0.05  # digits, not a blank page


def test_a_label_and_a_prompt_reach_the_models(tmp_path, capsys):
    from genai_course.models import DigitClassifier  # noqa: F401 (the judge below)
    from genai_course.pretrained import load_pretrained

    judge = load_pretrained("digit-classifier")
    out = str(tmp_path / "s.safetensors")
    assert _run(capsys, "gan-cgan-mnist", "--label", "7", "--n", "20", "--out", out)[0] == 0
    sevens = load_file(out)["samples"]
    assert (judge(sevens).argmax(1) == 7).float().mean() > 0.8  # chance: 0.1
    code, _, err = _run(
        capsys, "diffusion-text-mnist", "--prompt", "a seven", "--n", "10", "--steps", "10",
        "--out", out,
    )  # fmt: skip
    assert code == 0, err
    assert (judge(load_file(out)["samples"]).argmax(1) == 7).float().mean() > 0.6


def test_the_ring_writes_points(tmp_path, capsys):
    code, record, _ = _run(
        capsys, "gmm-ring", "--n", "50", "--out", str(tmp_path / "r.safetensors")
    )
    assert code == 0 and record["shape"] == [50, 2]


def test_text_and_tunes(tmp_path, capsys):
    txt = tmp_path / "t.txt"
    code, record, err = _run(
        capsys, "gpt-pydocs", "--prompt", "The for", "--n", "2", "--max-new", "30",
        "--temperature", "0.8", "--top-k", "20", "--out", str(txt),
    )  # fmt: skip
    assert code == 0, err
    text = txt.read_text()
    assert text.startswith("The for") and record["characters"] == [37, 37]
    abc = tmp_path / "t.abc"
    code, record, err = _run(
        capsys, "gpt-folk", "--n", "2", "--max-new", "200", "--out", str(abc), "--wav"
    )
    assert code == 0, err
    assert abc.read_text().startswith("X:1")
    if "wav" in record:  # the first tune parsed: a real WAV file
        with wave.open(record["wav"]) as w:
            assert w.getnframes() > 0 and w.getframerate() == 22_050
    else:
        assert record["wav_error"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["dcgan", "--out", "x.png"], "not a shipped generator; sampleable: .*gan-dcgan-mnist"),
        (["gan-dcgan-mnist", "--label", "3", "--out", "x.png"], "unconditional"),
        (["gan-dcgan-mnist", "--steps", "3", "--out", "x.png"], "takes no --steps"),
        (["vae-mnist", "--out", "x.txt"], r"must end in \.png or \.safetensors"),
        (["gpt-pydocs", "--label", "1", "--out", "x.txt"], "takes no --label"),
        (["gpt-pydocs", "--prompt", "caf\u00e9 \u4e2d", "--out", "x.txt"], "'\u4e2d'|'\u00e9'"),
        (["gmm-ring", "--temperature", "2", "--out", "x.png"], "takes no --temperature"),
        (["cvae-mnist", "--label", "12", "--out", "x.png"], "digit 0..9"),
        (["diffusion-mnist", "--prompt", "a one", "--out", "x.png"], "takes no --prompt"),
        (["diffusion-text-mnist", "--prompt", "a purple cat", "--out", "x.png"], "purple"),
    ],
)
def test_bad_names_and_options_get_an_error_listing_what_is_valid(
    tmp_path, capsys, monkeypatch, argv, message
):
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(capsys, *argv)
    assert code == 2
    assert __import__("re").search(message, err), err
    assert not list(tmp_path.iterdir())  # nothing written


def test_sampling_from_the_command_line_matches_the_library(tmp_path, capsys):
    from genai_course.generators import sample_digits

    out = str(tmp_path / "s.safetensors")
    assert _run(capsys, "vae-mnist", "--n", "5", "--seed", "3", "--out", out)[0] == 0
    torch.testing.assert_close(load_file(out)["samples"], sample_digits("vae-mnist", 5, seed=3))
