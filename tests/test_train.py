"""The training core, specified by what it must guarantee."""

import copy
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genai_course.checkpoint import load_checkpoint
from genai_course.train import (
    EveryN,
    NonFiniteLossError,
    Objective,
    TensorLoader,
    TrainConfig,
    Trainer,
    lr_factor,
)


def _regression_data(n=256, d=5, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    w = torch.randn(d, 1, generator=g, dtype=dtype)
    y = x @ w + 0.1 * torch.randn(n, 1, generator=g, dtype=dtype)
    return x, y


def _mse(model, batch):
    x, y = batch
    return F.mse_loss(model(x), y)


class _Net(nn.Module):
    """Small MLP with dropout, so that resuming must restore the RNG too."""

    def __init__(self, d=5):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 1))

    def forward(self, x):
        return self.net(x)

    def loss(self, batch):
        return _mse(self, batch)


def _cfg(**kw):
    base = dict(steps=20, batch_size=16, lr=1e-2, progress=False, log_every=5, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def test_loss_decreases_and_history_records_it():
    x, y = _regression_data()
    trainer = Trainer(_Net(), (x, y), _cfg(steps=60), val_data=(x, y))
    before = trainer.evaluate()["val_loss"]
    history = trainer.fit()
    after = history.last("val_loss")
    assert after < 0.5 * before
    steps, losses = history.series("train_loss")
    assert steps[-1] == 60 and losses[-1] < losses[0]


def _noisy_shift(x):
    # augmentation drawing from the global RNG: resuming must restore it
    return x + 0.01 * torch.randn_like(x)


def _resumable_trainer(tmp_path, **kw):
    torch.manual_seed(0)
    x, y = _regression_data()
    loader = TensorLoader(x, y, batch_size=16, seed=3, transform=_noisy_shift)
    cfg = _cfg(
        steps=24,
        schedule="cosine",
        warmup_steps=3,
        ema_decay=0.9,
        grad_clip=1.0,
        checkpoint_dir=str(tmp_path),
        eval_every=6,
        **kw,
    )
    return Trainer(_Net(), loader, cfg, val_data=(x, y))


def test_resume_is_bitwise_identical(tmp_path):
    straight = _resumable_trainer(tmp_path / "a")
    straight.fit()

    first = _resumable_trainer(tmp_path / "b")
    first.fit(max_steps=10)  # interrupted: the checkpoint at step 10 is all that survives
    del first
    resumed = _resumable_trainer(tmp_path / "b")
    resumed.fit(resume=True)

    assert resumed.step == straight.step == 24
    for (name, a), (_, b) in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().items()
    ):
        assert torch.equal(a, b), name
    for a, b in zip(straight.ema_model.parameters(), resumed.ema_model.parameters()):
        assert torch.equal(a, b)
    assert straight.history.series("val_loss") == resumed.history.series("val_loss")
    assert straight.lr() == resumed.lr()


def test_checkpoint_loading_never_runs_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    path = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, path)
    with pytest.raises(Exception, match="(?i)weights.only|unpickl|global"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_nonfinite_loss_stops_naming_the_step_and_keeps_last_checkpoint(tmp_path):
    x, y = _regression_data()
    calls = {"n": 0}

    def loss_fn(model, batch):
        calls["n"] += 1
        loss = _mse(model, batch)
        return loss * float("nan") if calls["n"] == 13 else loss

    cfg = _cfg(steps=30, checkpoint_dir=str(tmp_path), checkpoint_every=5, log_every=10)
    trainer = Trainer(_Net(), (x, y), cfg, loss_fn=loss_fn)
    with pytest.raises(NonFiniteLossError, match="at step 13") as err:
        trainer.fit()
    assert err.value.step == 13
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["step"] == 10
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_ema_follows_its_recurrence():
    x, y = _regression_data()
    model = nn.Linear(5, 1)
    snapshots = []
    trainer = Trainer(
        model,
        (x, y),
        _cfg(steps=4, ema_decay=0.8),
        loss_fn=_mse,
        callbacks=[EveryN(1, lambda t: snapshots.append(copy.deepcopy(t.model)), at_end=False)],
    )
    trainer.fit()
    # AveragedModel copies the first weights, then ema <- d*ema + (1-d)*w after each step
    ema = [p.detach().clone() for p in snapshots[0].parameters()]
    for snap in snapshots[1:]:
        ema = [0.8 * e + 0.2 * p.detach() for e, p in zip(ema, snap.parameters())]
    for e, p in zip(ema, trainer.ema_model.module.parameters()):
        torch.testing.assert_close(e, p)


def test_gradient_accumulation_equals_a_bigger_batch():
    x, y = _regression_data(dtype=torch.float64)
    results = []
    for batch_size, accumulate in [(32, 1), (8, 4)]:
        torch.manual_seed(0)
        model = nn.Linear(5, 1).double()
        loader = TensorLoader(x, y, batch_size=batch_size, seed=1)
        cfg = _cfg(
            steps=5,
            optimizer="sgd",
            momentum=0.0,
            accumulate=accumulate,
            batch_size=batch_size,
            lr=0.1,
        )
        Trainer(model, loader, cfg, loss_fn=_mse).fit()
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(results[0], results[1], rtol=1e-12, atol=1e-12)


class _TwoNets(nn.Module):
    def __init__(self):
        super().__init__()
        self.d = nn.Linear(2, 1)
        self.g = nn.Linear(2, 2)


def test_each_objective_updates_only_its_own_network():
    x = torch.randn(64, 2)
    model = _TwoNets()
    seen = []

    def d_loss(m, batch):
        seen.append(("d", any(p.requires_grad for p in m.g.parameters())))
        return m.d(m.g(batch)).pow(2).mean()

    def g_loss(m, batch):
        seen.append(("g", any(p.requires_grad for p in m.d.parameters())))
        return -m.d(m.g(batch)).mean()

    before = copy.deepcopy(model)
    trainer = Trainer(
        model,
        x,
        _cfg(steps=1, batch_size=8),
        objectives=[
            Objective("d", d_loss, module="d", repeats=2),
            Objective("g", g_loss, module="g"),
        ],
    )
    trainer.fit()
    assert seen == [("d", False), ("d", False), ("g", False)]
    assert all(p.requires_grad for p in model.parameters())  # switched back on afterwards
    assert not torch.equal(before.d.weight, model.d.weight)
    assert not torch.equal(before.g.weight, model.g.weight)

    # one objective that owns only "d" never touches "g"
    model2 = _TwoNets()
    g_before = copy.deepcopy(model2.g.state_dict())
    Trainer(
        model2, x, _cfg(steps=3, batch_size=8), objectives=[Objective("d", d_loss, module="d")]
    ).fit()
    for k, v in model2.g.state_dict().items():
        assert torch.equal(v, g_before[k])


def test_early_stopping_stops_and_restores_the_best_weights():
    x, y = _regression_data()
    values = iter([3.0, 2.0, 2.5, 2.6, 2.7, 1.0, 1.0])
    best = {}

    def metric(model):
        v = next(values)
        if v == 2.0:
            best["w"] = copy.deepcopy(model.state_dict())
        return {"val_score": v}

    cfg = _cfg(steps=100, eval_every=2, monitor="val_score", patience=3, restore_best=True)
    trainer = Trainer(_Net(), (x, y), cfg, metrics_fn=metric)
    trainer.fit()
    assert trainer.step == 10 and "early stopping" in trainer.stop_reason
    assert trainer.best_value == 2.0 and trainer.best_step == 4
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, best["w"][k])


def test_lr_schedule_warms_up_then_follows_the_cosine():
    kw = dict(total=110, warmup=10, schedule="cosine", min_ratio=0.1)
    assert lr_factor(0, **kw) == pytest.approx(0.1)
    assert lr_factor(9, **kw) == pytest.approx(1.0)
    assert lr_factor(10, **kw) == pytest.approx(1.0)
    assert lr_factor(60, **kw) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(110, **kw) == pytest.approx(0.1)
    assert lr_factor(60, total=110, warmup=10, schedule="linear") == pytest.approx(0.5)


def test_tensor_loader_shards_partition_each_global_batch():
    x = torch.arange(40)
    full = TensorLoader(x, batch_size=8, seed=5)
    shards = [TensorLoader(x, batch_size=4, seed=5).shard(r, 2) for r in range(2)]
    for _ in range(12):  # crosses epoch boundaries
        whole = full.next_batch()
        parts = torch.cat([s.next_batch() for s in shards])
        assert sorted(whole.tolist()) == sorted(parts.tolist())


def test_fp16_and_bf16_autocast_train_on_cpu():
    x, y = _regression_data()
    for precision in ("bf16", "fp16"):
        trainer = Trainer(
            nn.Linear(5, 1),
            (x, y),
            _cfg(steps=30, precision=precision),
            loss_fn=_mse,
            val_data=(x, y),
        )
        before = trainer.evaluate()["val_loss"]
        trainer.fit()
        assert trainer.history.last("val_loss") < before, precision


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="fp8")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="same first dimension"):
        TensorLoader(torch.zeros(3), torch.zeros(4), batch_size=2)
    with pytest.raises(ValueError, match="no submodule 'nope'"):
        Trainer(
            _TwoNets(),
            torch.zeros(8, 2),
            _cfg(),
            objectives=[Objective("x", lambda m, b: b.sum(), module="nope")],
        )
    with pytest.raises(ValueError, match="scalar tensor"):
        Trainer(
            nn.Linear(5, 1), _regression_data(), _cfg(steps=1), loss_fn=lambda m, b: m(b[0])
        ).fit()


@pytest.mark.slow
def test_torch_compile_trains_to_the_same_loss_as_eager():
    x, y = _regression_data()
    losses = []
    for compile_ in (False, True):
        torch.manual_seed(0)
        t = Trainer(nn.Linear(5, 1), (x, y), _cfg(steps=10, compile=compile_), loss_fn=_mse)
        t.fit()
        losses.append(t.evaluate((x, y))["val_loss"])
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)


def _course_losses(tiny_unet):
    """Training losses of the course models whose inputs are checked by value (pixel, label,
    timestep and token ranges): name -> (model, loss of a batch, a valid batch)."""
    from genai_course.models.diffusion import Diffusion, DiffusionConfig
    from genai_course.models.gan import GAN, GANConfig
    from genai_course.models.gpt import GPT, GPTConfig
    from genai_course.models.text_encoder import (
        TextConditionedUNet,
        TextEncoder,
        TextEncoderConfig,
    )
    from genai_course.models.vae import VAE, VAEConfig

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(4, 1, 8, 8, generator=g), torch.randint(0, 3, (4,), generator=g)
    digits = torch.rand(4, 1, 28, 28, generator=g)
    words = TextEncoderConfig(vocabulary=("a", "thick", "seven"), max_words=3, width=16,
                              layers=1, heads=2, out_dim=8)  # fmt: skip
    text_net = TextConditionedUNet(tiny_unet(cond_dim=8), TextEncoder(words))
    ids = torch.tensor([[1, 2, 3], [3, 0, 0], [0, 0, 0], [2, 3, 0]])
    diffusion = Diffusion(tiny_unet(num_classes=3), DiffusionConfig(image_shape=(1, 8, 8)))
    text_diffusion = Diffusion(text_net, DiffusionConfig(image_shape=(1, 8, 8)))
    vae = VAE(VAEConfig(image_size=8, latent_dim=2, hidden=16, num_classes=3))
    gan = GAN(GANConfig(arch="dcgan", num_classes=3, hidden=(32, 64), width=8))
    gpt = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16))
    tokens = torch.randint(0, 11, (2, 9), generator=g)

    def gpt_loss(b):
        return F.cross_entropy(gpt(b[0])[0].flatten(0, 1), b[1].flatten())

    return {
        "class diffusion": (diffusion, diffusion.loss, (x, y)),
        "text diffusion": (text_diffusion, text_diffusion.loss, (x, ids)),
        "conditional vae": (vae, vae.loss, (x, y)),
        "conditional gan, generator": (gan, gan.generator_loss, (digits, y)),
        "conditional gan, discriminator": (gan, gan.discriminator_loss, (digits, y)),
        "gpt": (gpt, gpt_loss, (tokens[:, :-1], tokens[:, 1:])),
    }


_TRACED = (
    "class diffusion",
    "text diffusion",
    "conditional vae",
    "conditional gan, generator",
    "conditional gan, discriminator",
    "gpt",
)


@pytest.mark.slow
@pytest.mark.parametrize("name", _TRACED)
def test_course_losses_trace_into_one_graph_for_torch_compile(name, tiny_unet):
    # A check that reads the data (``bool(x.min() < 0)``) breaks a compiled step in two and
    # syncs with the host on every step; genai_course.data.check_values turns such checks off
    # while dynamo traces.  fullgraph=True raises at the first graph break; the "eager" backend
    # traces without generating code, so this runs in a second.
    model, loss_fn, batch = _course_losses(tiny_unet)[name]
    model.eval()  # no dropout: the traced and the eager loss see the same computation

    def loss_of(b):
        out = loss_fn(b)
        return out[0] if isinstance(out, tuple) else out

    torch._dynamo.reset()
    traced_fn = torch.compile(loss_of, backend="eager", fullgraph=True)
    torch.manual_seed(0)  # the same noise and timesteps in both calls
    traced = traced_fn(batch)
    torch.manual_seed(0)
    assert traced.item() == pytest.approx(loss_of(batch).item(), rel=1e-5)


def test_value_checks_still_run_outside_compile(tiny_unet):
    from genai_course.models.diffusion import Diffusion, DiffusionConfig

    d = Diffusion(tiny_unet(num_classes=3), DiffusionConfig(image_shape=(1, 8, 8)))
    with pytest.raises(ValueError, match=r"pixels in \[0, 1\]"):
        d.loss((torch.full((2, 1, 8, 8), 2.0), torch.tensor([0, 1])))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        d.loss((torch.rand(2, 1, 8, 8), torch.tensor([0, 3])))


DDP_WORKER = textwrap.dedent("""
    import json, os, sys
    import torch, torch.nn.functional as F
    from torch import nn
    from genai_course.train import TensorLoader, TrainConfig, Trainer

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 5, generator=g, dtype=torch.float64)
    y = x.sum(1, keepdim=True)
    model = nn.Linear(5, 1).double()
    world = int(os.environ.get("WORLD_SIZE", 1))
    loader = TensorLoader(x, y, batch_size=16 // world, seed=1)
    cfg = TrainConfig(steps=6, batch_size=16 // world, lr=0.1, optimizer="sgd", momentum=0.0,
                      progress=False, device="cpu", checkpoint_dir=sys.argv[1])
    t = Trainer(model, loader, cfg, loss_fn=lambda m, b: F.mse_loss(m(b[0]), b[1]))
    t.fit()
    w = torch.cat([p.detach().flatten() for p in model.parameters()]).tolist()
    with open(os.path.join(sys.argv[1], f"weights-{t.rank}.json"), "w") as f:
        json.dump({"world": t.world_size, "ddp": t._ddp, "w": w}, f)
""")


@pytest.mark.slow
def test_two_process_gloo_ddp_matches_one_process(tmp_path, torchrun):
    import json

    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    single.mkdir(), ddp.mkdir()
    subprocess.run([sys.executable, str(script), str(single)], check=True, env=env, timeout=120)
    proc = torchrun(str(script), str(ddp))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    one = json.loads((single / "weights-0.json").read_text())
    r0 = json.loads((ddp / "weights-0.json").read_text())
    r1 = json.loads((ddp / "weights-1.json").read_text())
    assert r0["world"] == r1["world"] == 2 and r0["ddp"]
    assert r0["w"] == r1["w"]  # the two ranks hold identical weights
    assert r0["w"] == pytest.approx(one["w"], abs=1e-12)  # and equal one process, 2x batch
    # rank 0 alone wrote the checkpoint, and no temporary file was left behind
    assert sorted(p.name for p in ddp.iterdir() if p.suffix == ".pt") == ["last.pt"]
    assert not any(p.name.endswith(".tmp") for p in ddp.iterdir())
    assert load_checkpoint(ddp / "last.pt")["step"] == 6


def test_progress_bar_and_history_plot(capsys):
    import matplotlib

    matplotlib.use("Agg")
    x, y = _regression_data()
    t = Trainer(
        nn.Linear(5, 1), (x, y), _cfg(steps=5, progress=True), loss_fn=_mse, val_data=(x, y)
    )
    t.fit()
    assert "5/5" in capsys.readouterr().err
    ax = t.history.plot()
    assert {line.get_label() for line in ax.get_lines()} == {"train_loss", "val_loss"}
    assert math.isfinite(t.history.last("train_loss"))


def test_unknown_history_key_is_named():
    t = Trainer(nn.Linear(5, 1), _regression_data(), _cfg(steps=1), loss_fn=_mse)
    t.fit()
    with pytest.raises(KeyError, match="no metric 'val_acc'"):
        t.history.series("val_acc")


def test_weight_decay_spares_one_dimensional_parameters_by_default():
    from genai_course.train import decay_param_groups

    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4), nn.LayerNorm(4))
    params = list(model.parameters())
    decayed, spared = decay_param_groups(model, params, 0.1)
    assert {id(p) for p in decayed["params"]} == {id(model[0].weight), id(model[1].weight)}
    assert {id(p) for p in spared["params"]} == {
        id(model[1].bias), id(model[2].weight), id(model[2].bias)
    }  # fmt: skip
    assert decayed["weight_decay"] == 0.1 and spared["weight_decay"] == 0.0
    no_embed = decay_param_groups(model, params, 0.1, decay_embeddings=False)
    assert [id(p) for p in no_embed[0]["params"]] == [id(model[1].weight)]
    assert len(decay_param_groups(model, params, 0.1, "all")) == 1
    assert len(decay_param_groups(model, params, 0.0)) == 1  # nothing to spare
    with pytest.raises(ValueError, match="decay.rule must be one of 'matrices', 'all'"):
        decay_param_groups(model, params, 0.1, "some")


def test_trainer_leaves_biases_and_norm_gains_undecayed():
    """With a zero gradient, AdamW's only change to a parameter is the decay."""
    from genai_course.train import Trainer

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.norm = nn.Linear(3, 3), nn.LayerNorm(3)

        def loss(self, batch):
            return 0.0 * (self.norm(self.lin(batch[0]))).sum()

    for rule, bias_moves in (("matrices", False), ("all", True)):
        torch.manual_seed(0)
        model = Model()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        data = TensorLoader(torch.randn(8, 3), batch_size=4)
        cfg = TrainConfig(steps=3, lr=0.1, weight_decay=0.5, decay_rule=rule, progress=False)
        Trainer(model, data, cfg).fit()
        after = model.state_dict()
        assert not torch.equal(after["lin.weight"], before["lin.weight"])  # decayed
        for k in ("lin.bias", "norm.weight"):  # (norm.bias starts at 0: decay cannot move it)
            assert torch.equal(after[k], before[k]) is not bias_moves, (rule, k)
