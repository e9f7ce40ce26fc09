"""The benchmarks behind ``genai-course bench`` and multi-process training under torchrun."""

import ast
import dataclasses
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genai_course import bench
from genai_course.bench import flops, gpu_check, precision, rank_report
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

    for name, record in list(bench.BENCHMARKS.items()):
        monkeypatch.setitem(bench.BENCHMARKS, name, dataclasses.replace(record, run=fake(name)))
    objects, others = _run_cli(["bench", "all", "--tiny", "--repeats", "2"], capsys)
    assert [name for name, _ in ran] == list(bench.TINY)
    # the tiny sizes, with the explicit option on top where the benchmark takes it
    assert ran[0][1] == {**bench.TINY["trainer"], "repeats": 2}
    assert len(objects) == len(others) == len(bench.BENCHES)


def test_every_option_and_tiny_size_is_a_keyword_of_its_benchmark():
    import inspect

    for record in bench.BENCHMARKS.values():
        params = inspect.signature(record.run).parameters
        assert {o.keyword for o in record.options} <= set(params), record.name
        assert set(record.tiny) <= set(params), record.name
    assert bench.BENCHES == {k: b.run for k, b in bench.BENCHMARKS.items()}
    assert bench.TINY == {k: dict(b.tiny) for k, b in bench.BENCHMARKS.items()}


def test_the_bench_parser_is_generated_from_the_records(monkeypatch):
    from genai_course.cli import build_parser

    args = build_parser().parse_args(
        ["bench", "precision", "--models", "gpt", "--variants", "fp32,bf16", "--no-compile-cache"]
    )
    assert args.models == ("gpt",) and args.variants == ("fp32", "bf16")
    assert args.compile_cache is False and args.compile is None and args.steps is None
    args = build_parser().parse_args(["bench", "sampling", "--untrained", "--ddim-steps", "5,10"])
    assert args.pretrained is False and args.ddim_steps == (5, 10)

    # a new record is a new subcommand, with its options: one edit
    def noop(*, size: int = 3, device: str = "auto") -> dict:
        return {"bench": "noop", "size": size}

    extra = bench.Benchmark("noop", noop, "nothing", str, (bench.Option("--size"),))
    monkeypatch.setitem(bench.BENCHMARKS, "noop", extra)
    assert build_parser().parse_args(["bench", "noop", "--size", "7"]).size == 7


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
    monkeypatch.setattr(flops, "resolve_device", lambda d: torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: name)
    assert bench.peak_flops("cuda") == peak


def test_peak_flops_is_unknown_on_the_cpu():
    assert bench.peak_flops("cpu") is None


def test_choose_precision_falls_back_to_fp32_unless_bf16_is_native_and_faster(monkeypatch):
    monkeypatch.setattr(precision, "bf16_supported", lambda d: True)
    assert bench.choose_precision(1.0, 0.5, "cpu") == "bf16"
    assert bench.choose_precision(1.0, 1.2, "cpu") == "fp32"  # bf16 slower
    assert bench.choose_precision(1.0, 0.99, "cpu") == "fp32"  # within the margin
    monkeypatch.setattr(precision, "bf16_supported", lambda d: False)
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
def test_bench_ddp_two_ranks_end_identical_and_rank0_writes_each_file_once(
    tmp_path, capsys, loopback
):
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
def test_torchrun_runs_the_train_command_with_two_gloo_processes(tmp_path, torchrun):
    from genai_course.pretrained import read_manifest

    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    train = ["train", "classifier", "--profile", "smoke", "--device", "cpu", "--no-progress"]
    proc = torchrun(
        "-m", "genai_course.cli", *train, "--out", str(out), "--checkpoint-dir", str(ckpt)
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


# -- the package's shape ------------------------------------------------------------------------


def test_no_module_of_the_library_imports_the_cli():
    package = Path(bench.__file__).resolve().parents[1]
    offenders = []
    for path in package.rglob("*.py"):
        if path.name == "cli.py" and path.parent == package:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):  # from .cli import x, from . import cli
                modules = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            else:
                continue
            if any("cli" in m.split(".") for m in modules):
                offenders.append(str(path.relative_to(package)))
    assert offenders == []


@pytest.mark.slow
def test_rank_report_records_the_trainer_and_every_file_the_run_wrote(tmp_path, capsys):
    from genai_course.pretrained import load_pretrained

    out, ckpt, ranks = tmp_path / "out", tmp_path / "ckpt", tmp_path / "ranks"
    argv = [str(ranks), "classifier", "--profile", "smoke", "--device", "cpu", "--no-progress"]
    assert rank_report.main([*argv, "--out", str(out), "--checkpoint-dir", str(ckpt)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["model"] == "classifier" and printed["world_size"] == 1
    report = json.loads((ranks / "rank-0.json").read_text())
    assert report["rank"] == 0 and report["world_size"] == 1
    # the Trainer told the callback of its checkpoint, the run's options of what it shipped
    assert report["written"] == [
        str((ckpt / "last.pt").resolve()),
        str((out / "digit-classifier.safetensors").resolve()),
        str((out / "manifest.json").resolve()),
    ]
    (trainer,) = report["trainers"]
    assert trainer["step"] == 6
    shipped = load_pretrained("digit-classifier", folder=out)
    assert bench.param_digest(shipped) == trainer["params"]


# -- the GPU check ------------------------------------------------------------------------------


def test_gpu_check_refuses_without_cuda_and_says_what_to_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "gpu.json")]) == 2
    err = capsys.readouterr().err
    assert "needs CUDA" in err and "--tiny --device cpu" in err and "bench all --tiny" in err
    assert not (tmp_path / "gpu.json").exists()


@pytest.mark.slow
def test_gpu_check_writes_one_json_with_every_part_at_tiny_sizes(tmp_path):
    # every part but compilation (tens of seconds on a CPU; the slow test below runs it)
    parts = [p for p in gpu_check.PARTS if p != "compile"]
    out = tmp_path / "gpu.json"
    report = gpu_check.gpu_check(out, device="cpu", tiny=True, parts=parts, in_process=True)
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["tiny"] and report["device"] == "cpu" and list(report["parts"]) == parts
    failed = {k: v["error"] for k, v in report["parts"].items() if not v["ok"]}
    assert failed == {}
    p = report["parts"]
    assert set(p["precision"]["figures"]["unet"]) >= {"fp32", "bf16", "fp16", "channels_last"}
    assert p["precision"]["figures"]["gpt"]["fp16"]["ms_per_step"] > 0
    assert p["optimizer"]["figures"]["gpt"]["for-loop"]["speedup"] == 1.0
    assert p["dataloading"]["figures"]["TensorLoader"]["batches_per_s"] > 0
    for name in ("train-classifier", "train-gpt"):
        figures = p[name]["figures"]
        assert figures["profile"] == "smoke" and figures["steps"] == figures["planned_steps"]
        assert figures["ms_per_step"] > 0 and not figures["time_boxed"]
    assert p["chapter"]["figures"]["completed"] and p["chapter"]["result"]["cells_run"] == 2
    assert report["mfu"]["gpt"]["fp32"] is None  # no peak is known for a CPU
    assert all(math.isfinite(v) for v in _numbers(report))


@pytest.mark.slow
def test_gpu_check_parts_run_in_their_own_process_inside_their_time_box(tmp_path, monkeypatch):
    monkeypatch.setitem(
        gpu_check.PARTS, "optimizer", dataclasses.replace(gpu_check.PARTS["optimizer"], box_s=0.5)
    )
    monkeypatch.setattr(gpu_check, "_MIN_BOX_S", 0.1)
    out = tmp_path / "gpu.json"
    report = gpu_check.gpu_check(
        out, device="cpu", tiny=True, parts=["dataloading", "optimizer"], budget_s=60
    )
    parts = report["parts"]
    assert parts["dataloading"]["ok"] and parts["dataloading"]["figures"]["TensorLoader"]
    assert parts["dataloading"]["time_box_s"] == gpu_check.PARTS["dataloading"].box_s
    assert not parts["optimizer"]["ok"] and parts["optimizer"]["error"] == "time box of 0.5 s"
    assert json.loads(out.read_text())["parts"].keys() == parts.keys()


def test_gpu_check_skips_what_the_budget_leaves_no_time_for(tmp_path):
    report = gpu_check.gpu_check(
        tmp_path / "gpu.json", device="cpu", tiny=True, parts=["optimizer"], budget_s=1
    )
    assert report["parts"]["optimizer"] == {"ok": False, "error": "skipped: 1 s of budget left"}


def test_step_timer_cuts_a_run_at_its_time_box():
    from genai_course.train import TrainConfig, Trainer

    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    timer = gpu_check.StepTimer(seconds=1e-9, skip=0)
    cfg = TrainConfig(steps=50, batch_size=16, progress=False, device="cpu", eval_every=0)
    model = nn.Linear(4, 2)
    trainer = Trainer(
        model, (x, y), cfg, loss_fn=lambda m, b: F.cross_entropy(m(b[0]), b[1]), callbacks=[timer]
    )
    trainer.fit()
    (run,) = timer.runs
    assert trainer.step == run["steps"] == 1 and run["planned_steps"] == 50 and run["time_boxed"]
    assert run["steps_timed"] == 1 and run["ms_per_step"] > 0


@pytest.mark.slow
def test_gpu_check_tiny_runs_every_part_as_the_gpu_run_does(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        [sys.executable, "-m", "genai_course.bench.gpu_check", "--tiny", "--device", "cpu"]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert list(report["parts"]) == list(gpu_check.PARTS)
    assert all(p["ok"] for p in report["parts"].values())
    compiled = report["parts"]["compile"]["figures"]["gpt"]["compile"]
    assert compiled["first_step_s"] > 0
