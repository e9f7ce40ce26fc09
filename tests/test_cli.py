"""The genai-course command."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from genai_course.cli import main
from genai_course.recipes import RECIPES

# Metrics a smoke run may leave undefined: the bar rate is over the bars of the tunes that
# parsed, NaN when five steps of training parse none.
_UNDEFINED_AT_SMOKE = {"tunes_bar_rate"}
_TEXT_METRICS = {"device", "precision"}


def _assert_loads_with_the_shipped_metrics(checkpoint: str, folder: Path) -> None:
    """The checkpoint trained into ``folder`` rebuilds as the class its manifest names, and its
    manifest records every metric the shipped checkpoint of that name records, each a finite
    number (a list of them for per-trainer step counts), or a word for the device and precision.
    """
    from genai_course.pretrained import load_pretrained, read_manifest

    entry = read_manifest(folder)[checkpoint]
    model = load_pretrained(checkpoint, folder=folder)
    assert f"{type(model).__module__}:{type(model).__qualname__}" == entry["class"]
    metrics, shipped = entry["metrics"], read_manifest()[checkpoint]["metrics"]
    assert set(shipped) <= set(metrics), f"{checkpoint} lacks {set(shipped) - set(metrics)}"
    for key, value in metrics.items():
        if key in _TEXT_METRICS:
            assert isinstance(value, str) and value, key
            continue
        values = value if isinstance(value, list) else [value]
        assert values and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
        ), f"{checkpoint}: {key} = {value!r}"
        assert all(math.isfinite(v) for v in values) or key in _UNDEFINED_AT_SMOKE, (
            f"{checkpoint}: {key} = {value!r}"
        )


def test_info_lists_device_datasets_and_checkpoints(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "device" in out and "mnist" in out and "digit-classifier" in out
    assert "chapter 04's class-conditional VAE" in out  # each checkpoint's one-line description
    # figures rounded to what they mean: no float printed with its full binary expansion
    assert not re.search(r"\.\d{7,}", out), out


@pytest.mark.parametrize(
    "name, value, text",
    [
        ("conditional_accuracy", 0.9629999995231628, "0.963"),
        ("fid_floor", 57.91574808521818, "57.9"),
        ("fid_uncond_ratio", 5.646193656227076, "5.65"),
        ("train_seconds", 101.6, "102 s"),
        ("test_nll_nats", 96.76963609313965, "96.77"),
        ("val_bpc", 1.428689103745432, "1.429"),
        ("class_kl", 0.000515639176084731, "0.000516"),
    ],
)
def test_info_rounds_each_figure_to_what_it_means(name, value, text):
    from genai_course.cli import format_metric

    assert format_metric(name, value) == text


def test_train_writes_a_checkpoint_and_manifest_that_load(tmp_path, capsys):
    from genai_course.pretrained import read_manifest

    assert (
        main(["train", "gmm-ring", "--profile", "smoke", "--out", str(tmp_path), "--no-progress"])
        == 0
    )
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["model"] == "gmm-ring" and result["steps"] == 5
    entry = read_manifest(tmp_path)["gmm-ring"]
    assert (
        entry["command"] == f"genai-course train gmm-ring --profile smoke --seed 0 --out {tmp_path}"
    )
    _assert_loads_with_the_shipped_metrics("gmm-ring", tmp_path)


def test_sample_writes_a_picture(tmp_path, capsys):
    out = tmp_path / "ring.png"
    assert main(["sample", "gmm-ring", "--n", "500", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000
    assert json.loads(capsys.readouterr().out)["shape"] == [500, 2]


def test_sampling_a_classifier_is_refused(tmp_path, capsys):
    assert main(["sample", "classifier", "--out", str(tmp_path / "x.png")]) == 2
    assert "not a shipped generator; sampleable:" in capsys.readouterr().err


def test_unknown_model_is_named(capsys):
    with pytest.raises(SystemExit):
        main(["train", "gpt-17"])
    assert "invalid choice: 'gpt-17'" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_trainer_prints_json_and_the_ratio_line():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "genai_course.cli",
            "bench",
            "trainer",
            "--steps",
            "3",
            "--repeats",
            "1",
            "--batch-size",
            "32",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-2])
    assert result["bench"] == "trainer" and result["raw_ms_per_step"] > 0
    assert re.fullmatch(r"trainer/raw step-time ratio: \d+\.\d\d", lines[-1])


def test_console_script_is_installed():
    # the script sits beside this interpreter (a venv's bin/), whether or not that is on PATH
    script = Path(sys.executable).parent / "genai-course"
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "train" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_trains_with_the_smoke_budget_and_its_checkpoint_loads(name, tmp_path, capsys):
    from genai_course.pretrained import list_pretrained, read_manifest
    from genai_course.recipes import RECIPES

    assert main(["train", name, "--profile", "smoke", "--out", str(tmp_path), "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["model"] == name
    assert sorted(list_pretrained(tmp_path)) == sorted(RECIPES[name].checkpoints)
    for checkpoint in list_pretrained(tmp_path):
        assert read_manifest(tmp_path)[checkpoint]["command"].startswith(
            f"genai-course train {name} "
        )
        _assert_loads_with_the_shipped_metrics(checkpoint, tmp_path)


def test_resume_without_a_checkpoint_folder_is_refused():
    with pytest.raises(SystemExit, match="--resume needs --checkpoint-dir"):
        main(["train", "gmm-ring", "--profile", "smoke", "--resume", "--no-progress"])


@pytest.mark.slow
def test_each_trainer_of_a_recipe_keeps_its_own_resumable_checkpoint(tmp_path, capsys):
    from genai_course.pretrained import read_manifest

    ckpt = tmp_path / "ckpt"
    args = ["train", "vqvae", "--profile", "smoke", "--no-progress", "--checkpoint-dir", str(ckpt)]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # the VQ-VAE and its prior no longer share (and overwrite) one last.pt
    assert (ckpt / "vqvae" / "last.pt").is_file() and (ckpt / "prior" / "last.pt").is_file()
    assert not (ckpt / "last.pt").exists()
    # resuming finished runs trains nothing more and ships the same weights and figures
    assert main([*args, "--resume", "--out", str(tmp_path / "b")]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["steps"] == first["steps"]
    for key in ("test_mse", "prior_test_nll_per_code", "sample_class_kl"):
        assert second[key] == pytest.approx(first[key], rel=1e-6), key
    a, b = read_manifest(tmp_path / "a"), read_manifest(tmp_path / "b")
    assert a["vqvae-mnist"]["sha256"] == b["vqvae-mnist"]["sha256"]
    assert a["vqvae-prior"]["sha256"] == b["vqvae-prior"]["sha256"]
