"""The benchmarks behind ``genai-course bench`` and multi-process training under torchrun."""

import json
import math
import os
import statistics
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genai_course import bench
from genai_course.cli import main


def _numbers(x):
    """Every number in a nested result."""
    if isinstance(x, dict):
        return [n for v in x.values() for n in _numbers(v)]
    if isinstance(x, (list, tuple)):
        return [n for v in x for n in _numbers(v)]
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return [x]
    return []


def _run_cli(args, capsys):
    """Run ``genai-course ARGS``; return the JSON objects and the other lines it printed."""
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    objects = [json.loads(ln) for ln in lines if ln.startswith("{")]
    return objects, [ln for ln in lines if not ln.startswith("{")]


# keys every row of each benchmark must have (beyond the common header)
ROW_KEYS = {
    "precision": {"model", "variant", "ms_per_step", "ms_all", "throughput", "speedup", "tflops"},
    "batch-size": {"model", "batch_size", "ms_per_step", "throughput", "throughput_unit"},
    "optimizer": {"model", "impl", "params", "supported"},
    "dataloading": {"loader", "batches_per_s", "first_batch_s", "times_slower_than_tensorloader"},
    "sampling": {"model", "seconds", "seconds_all"},
}


@pytest.mark.parametrize("name", sorted(ROW_KEYS) + ["trainer"])
def test_every_bench_prints_one_json_line_then_a_summary(name, capsys):
    objects, others = _run_cli(["bench", name, "--tiny", "--device", "cpu"], capsys)
    assert len(objects) == 1 and len(others) == 1  # one JSON line, one human summary
    result = objects[0]
    assert result["bench"] == name and result["device"] == "cpu"
    assert result["torch"] == torch.__version__ and result["threads"] >= 1
    assert all(math.isfinite(v) for v in _numbers(result))
    if name == "trainer":
        assert result["raw_ms_per_step"] > 0 and result["trainer_ms_per_step"] > 0
        pairs = list(zip(result["trainer_ms_all"], result["raw_ms_all"]))
        assert len(result["ratio_all"]) == len(pairs) == result["repeats"]
        assert result["ratio"] == pytest.approx(statistics.median(result["ratio_all"]), abs=1e-4)
        differences = [t - r for t, r in pairs]  # the ms columns are rounded to 4 digits
        assert result["overhead_ms"] == pytest.approx(statistics.median(differences), abs=1e-3)
        return
    rows = result["results"]
    assert rows and all(ROW_KEYS[name] <= set(r) for r in rows)
    for r in rows:
        for key in ("ms_per_step", "throughput", "batches_per_s", "seconds", "tokens_per_s"):
            if key in r:
                assert r[key] > 0, (key, r)


def test_bench_all_prints_every_benchmark_first_as_json_lines(capsys, monkeypatch):
    ran = []

    def fake(name):
        def run(**kwargs):
            ran.append((name, kwargs))
            return {"bench": "trainer", "ratio": 1.0}

        return run

    monkeypatch.setattr(bench, "BENCHES", {k: fake(k) for k in bench.BENCHES})
    objects, others = _run_cli(["bench", "all", "--tiny", "--repeats", "2"], capsys)
    assert [name for name, _ in ran] == list(bench.TINY)
    # the tiny sizes, with the explicit option on top where the benchmark takes it
    assert ran[0][1] == {**bench.TINY["trainer"], "repeats": 2}
    assert len(objects) == len(others) == len(bench.BENCHES)


def test_precision_bench_times_each_variant_and_reports_the_choice():
    r = bench.bench_precision(profile="smoke", unet_batch=2, gpt_batch=2, steps=1, repeats=1)
    variants = {(row["model"], row["variant"]) for row in r["results"]}
    assert variants == {
        ("unet", "fp32"),
        ("unet", "bf16"),
        ("unet", "channels_last"),
        ("unet", "channels_last+bf16"),
        ("gpt", "fp32"),
        ("gpt", "bf16"),  # channels_last is for conv models only
    }
    assert all(row["speedup"] == 1.0 for row in r["results"] if row["variant"] == "fp32")
    assert set(r["choice"]) == {"unet", "gpt"} and set(r["choice"].values()) <= {"fp32", "bf16"}
    assert r["auto_precision"] == "fp32" and r["peak_tflops"] is None  # CPU
    assert all(row["mfu"] is None for row in r["results"])
    assert r["flops"]["gpt"]["per_step_formula"] > r["flops"]["gpt"]["per_step_counted"] > 0


@pytest.mark.slow
def test_precision_bench_compiles_the_step_and_times_compilation_apart():
    r = bench.bench_precision(
        models=("gpt",),
        variants=("fp32", "compile"),
        profile="smoke",
        gpt_batch=2,
        steps=1,
        repeats=1,
        compile_cache=False,
    )
    eager, compiled = r["results"]
    assert compiled["compile"] and not eager["compile"] and compiled["ms_per_step"] > 0
    assert compiled["first_step_s"] > eager["first_step_s"]  # the first call compiles


def test_precision_bench_rejects_unknown_variants():
    with pytest.raises(ValueError, match="unknown variants"):
        bench.bench_precision(profile="smoke", variants=("fp8",), steps=1, repeats=1)


def test_gpt_formula_6n_is_exactly_the_counted_matmul_flops():
    # Forward: 2 FLOPs per weight per token; backward: twice that (input and weight gradients).
    # The counter sees the matrix products (not CPU attention), so it must equal 6 * N_matrix
    # * tokens, N_matrix being the 2-D weights used as matrices (the tied head counts once).
    work = bench.course_workload("gpt", "smoke")
    model, batch = work.build(), work.batch(3, torch.device("cpu"))
    counted = bench.count_flops(lambda: work.loss_fn(model, batch).backward())
    n_matrix = sum(
        p.numel() for n, p in model.named_parameters() if p.ndim == 2 and n != "wpe.weight"
    )
    tokens = batch[0].numel()
    assert counted == 6 * n_matrix * tokens
    c = model.config
    per_token = bench.gpt_flops_per_token(
        model.num_params(embeddings=False), c.n_layer, c.n_embd, 7
    )
    assert per_token == 6 * model.num_params(embeddings=False) + 12 * c.n_layer * 7 * c.n_embd


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA L40S", 362e12),
        ("NVIDIA L4", 121e12),
        ("Tesla T4", 65e12),
        ("NVIDIA GeForce GTX 1080", None),
    ],
)
def test_peak_flops_reads_the_table_by_gpu_name(name, peak, monkeypatch):
    monkeypatch.setattr(bench, "resolve_device", lambda d: torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: name)
    assert bench.peak_flops("cuda") == peak


def test_peak_flops_is_unknown_on_the_cpu():
    assert bench.peak_flops("cpu") is None


def test_choose_precision_falls_back_to_fp32_unless_bf16_is_native_and_faster(monkeypatch):
    monkeypatch.setattr(bench, "bf16_supported", lambda d: True)
    assert bench.choose_precision(1.0, 0.5, "cpu") == "bf16"
    assert bench.choose_precision(1.0, 1.2, "cpu") == "fp32"  # bf16 slower
    assert bench.choose_precision(1.0, 0.99, "cpu") == "fp32"  # within the margin
    monkeypatch.setattr(bench, "bf16_supported", lambda d: False)
    assert bench.choose_precision(1.0, 0.5, "cpu") == "fp32"  # emulated: not trusted


def test_measured_precision_leaves_the_model_untouched():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    before = bench.param_digest(model)
    x, y = torch.randn(32, 8), torch.randint(0, 2, (32,))
    out = bench.measured_precision(
        model, (x, y), lambda m, b: F.cross_entropy(m(b[0]), b[1]), "cpu", steps=1, repeats=1
    )
    assert out["choice"] in ("fp32", "bf16") and out["fp32_ms"] > 0 and out["bf16_ms"] > 0
    assert bench.param_digest(model) == before


def test_optimizer_implementations_compute_the_same_update():
    r = bench.bench_optimizer(models=("gpt",), profile="smoke", steps=2, repeats=1)
    rows = {row["impl"]: row for row in r["results"]}
    assert set(rows) == set(bench.OPTIMIZER_IMPLS)
    for row in rows.values():
        if row["supported"]:
            assert row["max_abs_diff"] <= 1e-6
    assert rows["for-loop"]["max_abs_diff"] == 0.0


def test_sampling_bench_compares_samplers_and_the_kv_cache():
    r = bench.bench_sampling(
        pretrained=False, timesteps=12, n_images=1, ddim_steps=(3, 6), new_tokens=5
    )
    assert r["timesteps"] == 12
    steps = {(row.get("sampler"), row.get("steps")) for row in r["results"]}
    assert {("ddim", 3), ("ddim", 6), ("ddpm", 12)} <= steps
    assert set(r["speedup"]) == {"ddim3_vs_ddpm", "ddim6_vs_ddpm", "kv_cache"}
    assert r["cache_matches"]  # greedy decoding: the cache changes the speed, not the text


def test_param_digest_sees_every_bit():
    a = nn.Linear(3, 2)
    b = nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    assert bench.param_digest(a) == bench.param_digest(b)
    with torch.no_grad():
        b.bias[0] = torch.nextafter(b.bias[0], torch.tensor(1.0))  # one ulp
    assert bench.param_digest(a) != bench.param_digest(b)


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        bench.bench_dataloading(repeats=0)
    with pytest.raises(ValueError, match="workload must be one of"):
        bench.course_workload("resnet")


# -- many processes ---------------------------------------------------------------------------


@pytest.mark.slow
def test_bench_ddp_two_ranks_end_identical_and_rank0_writes_each_file_once(tmp_path, capsys):
    from genai_course.pretrained import load_pretrained

    objects, _ = _run_cli(["bench", "ddp", "--tiny", "--folder", str(tmp_path)], capsys)
    r = objects[0]
    assert r["backend"] == "gloo" and r["world_sizes"] == [2, 2] and r["steps"] == [[6], [6]]
    assert r["replicas_identical"]  # all-reduced gradients keep the replicas in lockstep
    assert r["buffers_identical"]  # batch-norm statistics are rank 0's at evaluation and the end
    assert r["writes"] == {
        "checkpoints/last.pt": [0],
        "out/digit-classifier.safetensors": [0],
        "out/manifest.json": [0],
    }
    assert r["written_once_by_rank0"] and r["manifest_entries"] == ["digit-classifier"]
    assert r["result"]["world_size"] == 2
    # the file on disk holds the replicas' weights
    shipped = load_pretrained("digit-classifier", folder=tmp_path / "out")
    assert bench.param_digest(shipped)[:16] == r["param_digests"][0][0]


@pytest.mark.slow
def test_torchrun_runs_the_train_command_with_two_gloo_processes(tmp_path):
    from genai_course.pretrained import read_manifest

    env = {k: v for k, v in os.environ.items() if k not in bench._LAUNCH_ENV}
    env["OMP_NUM_THREADS"] = "1"
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            f"--master_port={bench.free_port()}",
            "-m",
            "genai_course.cli",
            "train",
            "classifier",
            "--profile",
            "smoke",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--checkpoint-dir",
            str(ckpt),
            "--no-progress",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(printed) == 1  # rank 0 alone reports
    assert printed[0]["world_size"] == 2 and printed[0]["steps"] == 6
    assert sorted(p.name for p in out.iterdir()) == [
        "digit-classifier.safetensors",
        "manifest.json",
    ]
    assert sorted(p.name for p in ckpt.iterdir()) == ["last.pt"]  # no temporary files left
    assert read_manifest(out)["digit-classifier"]["metrics"]["world_size"] == 2


def test_format_table_lines_up_columns():
    text = bench.format_table(
        [{"model": "gpt", "ms": 12.34567, "mfu": None}, {"model": "unet", "ms": 3.0}],
        ["model", "ms", "mfu"],
    )
    lines = text.splitlines()
    assert lines[0].split() == ["model", "ms", "mfu"]
    assert lines[2].split() == ["gpt", "12.35", "-"] and lines[3].split() == ["unet", "3", "-"]
    assert len({len(ln) for ln in lines}) == 1
