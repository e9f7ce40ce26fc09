"""Continual learning: EWC, replay, LwF and the accuracy matrix, specified on tiny problems."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genai_course.continual import (
    EWC,
    ContinualConfig,
    ReplayBuffer,
    average_accuracy,
    distillation_loss,
    fisher_diagonal,
    forgetting,
    split_tasks,
    train_sequentially,
)
from genai_course.data import load_digits
from genai_course.train import TrainConfig

# ----------------------------------------------------------------------------------------------
# tasks


def test_split_tasks_class_incremental_keeps_labels_and_every_example():
    x, y = load_digits("train")
    tasks = split_tasks(x, y)
    assert len(tasks) == 5
    assert sum(len(xt) for xt, _ in tasks) == len(x)
    for (a, b), (xt, yt) in zip(((0, 1), (2, 3), (4, 5), (6, 7), (8, 9)), tasks):
        assert set(yt.tolist()) == {a, b}
        assert len(xt) == len(yt) == int(((y == a) | (y == b)).sum())
        assert torch.equal(xt, x[(y == a) | (y == b)])  # original order


def test_split_tasks_task_incremental_relabels_by_position_in_the_group():
    x, y = load_digits("train")
    (x0, y0), (x1, y1) = split_tasks(x, y, ((3, 2), (7,)), scenario="task")
    assert torch.equal(y0, (y[(y == 3) | (y == 2)] == 2).long())  # 3 -> 0, 2 -> 1
    assert y1.tolist() == [0] * int((y == 7).sum())


@pytest.mark.parametrize(
    "pairs, scenario, match",
    [
        ((), "class", "pairs is empty"),
        (((0, 1), ()), "class", "group 1 of pairs is empty"),
        (((0, 1), (1, 2)), "class", "class 1 is in group 0 and group 1"),
        (((0, 11),), "class", r"classes \[11\] of pairs have no example"),
        (((0, 1),), "domain", "scenario must be one of"),
    ],
)
def test_split_tasks_rejects_bad_pairs(pairs, scenario, match):
    x, y = load_digits("val")
    with pytest.raises(ValueError, match=match):
        split_tasks(x, y, pairs, scenario=scenario)


# ----------------------------------------------------------------------------------------------
# Fisher information and EWC


def _softmax_regression():
    """Logistic regression over 3 classes on 3 points of the plane: the Fisher by hand."""
    torch.manual_seed(1)
    model = nn.Linear(2, 3)
    x = torch.tensor([[1.0, 2.0], [-1.5, 0.5], [0.3, -2.0]])
    y = torch.tensor([0, 2, 1])
    return model, x, y


def _hand_grads(model, x, c):
    """d log p(c | x) / d (W, b) = ((e_c - p) x^T, e_c - p) for logits W x + b."""
    with torch.no_grad():
        p = model(x.unsqueeze(0)).softmax(-1)[0]  # (C,)
    r = F.one_hot(torch.tensor(c), 3).float() - p  # (C,)
    return torch.outer(r, x), r


@pytest.mark.parametrize("vectorize", [True, False])
def test_fisher_diagonal_matches_hand_computed_logistic_regression(vectorize):
    model, x, y = _softmax_regression()
    emp_w, emp_b = torch.zeros(3, 2), torch.zeros(3)
    exact_w, exact_b = torch.zeros(3, 2), torch.zeros(3)
    for xn, yn in zip(x, y):
        gw, gb = _hand_grads(model, xn, int(yn))
        emp_w += gw.square() / 3
        emp_b += gb.square() / 3
        p = model(xn.unsqueeze(0)).softmax(-1)[0].detach()
        for c in range(3):
            gw, gb = _hand_grads(model, xn, c)
            exact_w += p[c] * gw.square() / 3
            exact_b += p[c] * gb.square() / 3
    emp = fisher_diagonal(model, (x, y), kind="empirical", batch_size=2, vectorize=vectorize)
    exact = fisher_diagonal(model, (x, y), kind="exact", batch_size=2, vectorize=vectorize)
    assert set(emp) == {"weight", "bias"}
    torch.testing.assert_close(emp["weight"], emp_w)
    torch.testing.assert_close(emp["bias"], emp_b)
    torch.testing.assert_close(exact["weight"], exact_w)
    torch.testing.assert_close(exact["bias"], exact_b)


def test_empirical_fisher_is_the_mean_of_squares_not_the_square_of_the_mean_gradient():
    model, x, y = _softmax_regression()
    fisher = fisher_diagonal(model, (x, y), kind="empirical")
    model.zero_grad()
    log_lik = -F.cross_entropy(model(x), y)  # mean over the 3 points
    log_lik.backward()
    square_of_mean = model.weight.grad.square()
    assert torch.all(fisher["weight"] >= square_of_mean - 1e-7)  # Jensen
    assert not torch.allclose(fisher["weight"], square_of_mean, rtol=0.1)


def test_sampled_true_fisher_converges_to_the_exact_expectation():
    model, x, y = _softmax_regression()
    many = (x.repeat(1500, 1), y.repeat(1500))
    sampled = fisher_diagonal(model, many, kind="true", batch_size=1500, seed=3)
    exact = fisher_diagonal(model, (x, y), kind="exact")
    again = fisher_diagonal(model, many, kind="true", batch_size=1500, seed=3)
    torch.testing.assert_close(sampled["weight"], exact["weight"], rtol=0.08, atol=2e-3)
    torch.testing.assert_close(sampled["bias"], exact["bias"], rtol=0.08, atol=2e-3)
    assert torch.equal(sampled["weight"], again["weight"])  # seeded


@pytest.mark.parametrize("kind", ["empirical", "true", "exact"])
def test_fisher_vmap_matches_one_backward_per_example_on_a_conv_batchnorm_model(kind):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(4 * 8 * 8, 10),
    )
    x, y = load_digits("val")
    x, y = x[:20], y[:20]
    model(x)  # moves the batch-norm statistics away from (0, 1)
    fast = fisher_diagonal(model, (x, y), kind=kind, batch_size=8)
    slow = fisher_diagonal(model, (x, y), kind=kind, batch_size=8, vectorize=False)
    assert model.training  # put back as it was
    assert set(fast) == {n for n, _ in model.named_parameters()}
    for n in fast:
        torch.testing.assert_close(fast[n], slow[n], rtol=1e-4, atol=1e-7)


def test_ewc_penalty_is_zero_at_the_anchor_and_the_hand_formula_elsewhere():
    model, x, y = _softmax_regression()
    fisher = fisher_diagonal(model, (x, y), kind="exact")
    ewc = EWC(lam=7.0)
    assert float(ewc.penalty(model)) == 0.0  # nothing consolidated yet
    ewc.consolidate(model, fisher)
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert ewc.penalty(model).item() == 0.0  # exactly
    with torch.no_grad():
        model.weight += torch.tensor([[0.1, -0.2], [0.3, 0.0], [-0.5, 0.4]])
        model.bias -= 0.25
    hand = (
        0.5
        * 7.0
        * sum(
            (fisher[n] * (p.detach() - anchor[n]) ** 2).sum() for n, p in model.named_parameters()
        )
    )
    penalty = ewc.penalty(model)
    torch.testing.assert_close(penalty, hand)
    penalty.backward()  # gradient lambda F (theta - theta*)
    torch.testing.assert_close(
        model.weight.grad, 7.0 * fisher["weight"] * (model.weight.detach() - anchor["weight"])
    )


def test_ewc_separate_sums_per_task_terms_and_online_accumulates_the_fisher():
    model, _, _ = _softmax_regression()
    f1 = {n: torch.rand_like(p) for n, p in model.named_parameters()}
    f2 = {n: torch.rand_like(p) for n, p in model.named_parameters()}
    separate, online = EWC(2.0), EWC(2.0, mode="online", gamma=0.5)
    a1 = {n: p.detach().clone() for n, p in model.named_parameters()}
    separate.consolidate(model, f1)
    online.consolidate(model, f1)
    with torch.no_grad():
        model.weight += 1.0
    a2 = {n: p.detach().clone() for n, p in model.named_parameters()}
    separate.consolidate(model, f2)
    online.consolidate(model, f2)
    assert (len(separate), len(online)) == (2, 1)
    with torch.no_grad():
        model.bias += 0.5
    params = dict(model.named_parameters())

    def term(f, a):
        return sum((f[n] * (params[n].detach() - a[n]) ** 2).sum() for n in f)

    torch.testing.assert_close(separate.penalty(model), term(f1, a1) + term(f2, a2))
    f_online = {n: f2[n] + 0.5 * f1[n] for n in f1}
    torch.testing.assert_close(online.penalty(model), term(f_online, a2))
    restored = EWC(0.0)
    restored.load_state_dict(separate.state_dict())
    assert torch.equal(restored.penalty(model), separate.penalty(model))


def test_ewc_rejects_bad_settings():
    with pytest.raises(ValueError, match="lam"):
        EWC(-1.0)
    with pytest.raises(ValueError, match=r"mode must be one of 'separate', 'online'"):
        EWC(1.0, mode="sum")
    with pytest.raises(ValueError, match="kind must be one of 'empirical', 'true', 'exact'"):
        model, x, y = _softmax_regression()
        fisher_diagonal(model, (x, y), kind="fisher")


# ----------------------------------------------------------------------------------------------
# replay


def test_replay_buffer_keeps_a_fixed_size_and_balances_the_classes():
    buffer = ReplayBuffer(capacity=105, num_classes=10, seed=0)
    x, y = load_digits("train")
    for xt, yt in split_tasks(x, y):  # classes arrive two at a time, ~250 examples per task
        buffer.add(xt, yt)
        counts = buffer.class_counts()
        seen = counts[counts > 0]
        assert len(buffer) == 105
        assert int(seen.max() - seen.min()) <= 1
    assert buffer.class_counts().tolist() == [11] * 5 + [10] * 5
    xs, ys = buffer.sample(500, torch.Generator().manual_seed(0))
    assert xs.shape == (500, 1, 8, 8) and ys.shape == (500,)
    for img, label in zip(xs[:20], ys[:20]):  # each sampled image keeps its own label
        assert label in y[(x == img).flatten(1).all(1)]


@pytest.mark.parametrize("num_classes", [None, 2])
def test_replay_buffer_holds_a_uniform_sample_of_each_stream(num_classes):
    # Class 0 streams 100 examples (x = their index), then class 1 arrives: balanced, class 0
    # is cut to half the memory. Either way the kept class-0 examples must be uniform over the
    # whole stream (mean index 49.5), not the first or last ones.
    kept = []
    for seed in range(300):
        buffer = ReplayBuffer(capacity=10, num_classes=num_classes, seed=seed)
        buffer.add(torch.arange(100.0).unsqueeze(1), torch.zeros(100, dtype=torch.long))
        buffer.add(torch.full((50, 1), -1.0), torch.ones(50, dtype=torch.long))
        state = buffer.state_dict()
        kept += [v for v, c in zip(state["x"][:, 0].tolist(), state["labels"].tolist()) if c == 0]
    per_seed = len(kept) / 300
    assert per_seed == pytest.approx(5.0 if num_classes else 10 * 100 / 150, abs=0.5)
    assert np.mean(kept) == pytest.approx(49.5, abs=4)


def test_replay_buffer_is_reproducible_and_resumes_exactly():
    x, y = load_digits("train")
    (x0, y0), (x1, y1), (x2, y2) = split_tasks(x, y, ((0, 1), (2, 3), (4, 5)))
    a = ReplayBuffer(40, num_classes=10, seed=5)
    a.add(x0, y0)
    a.add(x1, y1)
    b = ReplayBuffer(40, num_classes=10, seed=5)
    b.load_state_dict(a.state_dict())
    a.add(x2, y2)
    b.add(x2, y2)
    c = ReplayBuffer(40, num_classes=10, seed=5)
    for xt, yt in ((x0, y0), (x1, y1), (x2, y2)):
        c.add(xt, yt)
    for other in (b, c):
        sa, so = a.state_dict(), other.state_dict()
        assert torch.equal(sa["x"], so["x"]) and torch.equal(sa["labels"], so["labels"])
    sa, sb = (
        a.sample(16, torch.Generator().manual_seed(1)),
        b.sample(16, torch.Generator().manual_seed(1)),
    )
    assert torch.equal(sa[0], sb[0]) and torch.equal(sa[1], sb[1])
    d = ReplayBuffer(40, num_classes=10, seed=6)
    for xt, yt in ((x0, y0), (x1, y1), (x2, y2)):
        d.add(xt, yt)
    assert not torch.equal(d.state_dict()["x"], a.state_dict()["x"])  # the seed matters


@pytest.mark.parametrize("capacity", [0, -3, 2.5, True])
def test_replay_buffer_rejects_a_capacity_below_one(capacity):
    with pytest.raises(ValueError, match="capacity must be an integer >= 1"):
        ReplayBuffer(capacity)


def test_replay_buffer_rejects_bad_labels_shapes_and_empty_sampling():
    buffer = ReplayBuffer(8, num_classes=3)
    with pytest.raises(ValueError, match="empty"):
        buffer.sample(4)
    with pytest.raises(ValueError, match=r"labels must be in 0..2"):
        buffer.add(torch.zeros(2, 5), torch.tensor([0, 3]))
    buffer.add(torch.zeros(2, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"shape \(N, 5\)"):
        buffer.add(torch.zeros(2, 4), torch.tensor([0, 1]))


# ----------------------------------------------------------------------------------------------
# learning without forgetting


def test_distillation_loss_is_zero_for_identical_models_and_positive_otherwise():
    logits = torch.randn(16, 10)
    assert distillation_loss(logits, logits.clone(), temperature=2.0).item() == 0.0
    assert distillation_loss(logits + torch.randn(16, 10), logits, temperature=2.0).item() > 0
    # a shift of all logits of an example changes no probability
    assert distillation_loss(logits + 3.0, logits).item() == pytest.approx(0.0, abs=1e-6)


def test_distillation_loss_is_t_squared_times_the_mean_kl_of_softened_outputs():
    new, old = torch.randn(4, 5), torch.randn(4, 5)
    t = 3.0
    q, p = (old / t).softmax(-1), (new / t).softmax(-1)
    hand = t**2 * (q * (q.log() - p.log())).sum(-1).mean()
    torch.testing.assert_close(distillation_loss(new, old, t), hand)
    cols = [1, 3]
    q, p = (old[:, cols] / t).softmax(-1), (new[:, cols] / t).softmax(-1)
    hand = t**2 * (q * (q.log() - p.log())).sum(-1).mean()
    torch.testing.assert_close(distillation_loss(new, old, t, classes=cols), hand)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        distillation_loss(new, old, 0.0)


# ----------------------------------------------------------------------------------------------
# training a sequence of tasks


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def _two_tasks():
    x, y = load_digits("train")
    xt, yt = load_digits("test")
    return split_tasks(x, y, ((0, 1), (2, 3))), split_tasks(xt, yt, ((0, 1), (2, 3)))


def _cfg(**kw):
    base = dict(steps=60, batch_size=32, lr=3e-3, progress=False, device="cpu", log_every=20)
    return TrainConfig(**{**base, **kw})


def test_naive_fine_tuning_forgets_the_first_task_and_replay_remembers_it():
    tasks, tests = _two_tasks()
    naive = train_sequentially(_mlp(), tasks, _cfg(), "naive", eval_sets=tests)
    replay = train_sequentially(
        _mlp(),
        tasks,
        _cfg(),
        "replay",
        eval_sets=tests,
        settings=ContinualConfig(replay_capacity=40),
    )
    for R in (naive, replay):
        assert R.shape == (2, 2) and R.min() >= 0 and R.max() <= 1
        assert R[0, 0] > 0.9  # task 0 was learned
    assert naive[1, 0] < naive[0, 0] - 0.5  # and forgotten
    assert replay[1, 0] > naive[1, 0] + 0.5
    assert forgetting(replay) < forgetting(naive)


def test_ewc_and_lwf_keep_what_they_promise_to_keep_better_than_naive_fine_tuning():
    # EWC keeps the weights that matter for task 0 (large Fisher) near their values; LwF keeps
    # the old model's outputs for the old classes on the new inputs. Each is measured here
    # independently of the method, from snapshots taken after task 0.
    tasks, tests = _two_tasks()
    x1 = tasks[1][0]
    kept = {}
    for method, settings in [
        ("naive", ContinualConfig()),
        ("ewc", ContinualConfig(ewc_lambda=1e3, fisher_samples=64)),
        ("lwf", ContinualConfig(lwf_alpha=1.0, lwf_temperature=2.0)),
    ]:
        model, seen = _mlp(), {}

        def on_task_end(t, trainer, model=model, seen=seen):
            seen.setdefault("keys", []).append(trainer.history.keys())
            if t == 0:
                seen["old"] = copy.deepcopy(model)
                seen["fisher"] = fisher_diagonal(model, tasks[0], kind="exact")
                return
            old = dict(seen["old"].named_parameters())
            seen["moved"] = sum(  # F-weighted squared distance from the task-0 weights
                (seen["fisher"][n] * (p.detach() - old[n].detach()) ** 2).sum()
                for n, p in model.named_parameters()
            )
            with torch.no_grad():
                seen["drift"] = distillation_loss(model(x1), seen["old"](x1), classes=[0, 1])

        R = train_sequentially(
            model,
            tasks,
            _cfg(),
            method,
            settings=settings,
            eval_sets=tests,
            on_task_end=on_task_end,
        )
        assert R.shape == (2, 2) and 0 <= R.min() and R.max() <= 1
        kept[method] = (float(seen["moved"]), float(seen["drift"]), R)
        extra = {"naive": None, "ewc": "ewc_penalty", "lwf": "distill"}[method]
        if extra is not None:  # the method's term is logged once there is a past task
            assert extra not in seen["keys"][0] and extra in seen["keys"][1]
    assert kept["ewc"][0] < 0.3 * kept["naive"][0]
    assert kept["ewc"][2][1, 0] > kept["naive"][2][1, 0] + 0.2  # and so forgets less
    assert kept["lwf"][1] < 0.5 * kept["naive"][1]


def test_train_sequentially_rejects_unknown_methods_and_mismatched_eval_sets():
    tasks, tests = _two_tasks()
    with pytest.raises(ValueError, match=r"method must be one of 'naive', 'ewc', 'replay', 'lwf'"):
        train_sequentially(_mlp(), tasks, _cfg(), "si")
    with pytest.raises(ValueError, match="eval_sets has 1 entries, expected one per task"):
        train_sequentially(_mlp(), tasks, _cfg(), eval_sets=tests[:1])
    with pytest.raises(ValueError, match="tasks is empty"):
        train_sequentially(_mlp(), [], _cfg())
    with pytest.raises(ValueError, match="replay_capacity must be >= 1"):
        ContinualConfig(replay_capacity=0)


def test_average_accuracy_and_forgetting_of_a_known_matrix():
    R = np.array([[0.9, 0.1, 0.0], [0.5, 0.95, 0.2], [0.6, 0.7, 0.8]])
    assert average_accuracy(R) == pytest.approx((0.6 + 0.7 + 0.8) / 3)
    assert forgetting(R) == pytest.approx(((0.9 - 0.6) + (0.95 - 0.7)) / 2)
    assert forgetting(torch.tensor([[1.0, 0.0], [1.0, 1.0]])) == 0.0
    with pytest.raises(ValueError, match="at least 2 tasks"):
        forgetting(np.ones((1, 1)))
    with pytest.raises(ValueError, match="square accuracy matrix"):
        average_accuracy(np.ones((2, 3)))


def test_heads_score_each_task_among_its_own_classes_only():
    tasks, tests = _two_tasks()
    pairs = ((0, 1), (2, 3))
    model = _mlp()
    R = train_sequentially(model, tasks, _cfg(), "naive", eval_sets=tests, heads=pairs)
    with torch.no_grad():
        for j, ((xe, ye), cols) in enumerate(zip(tests, pairs, strict=True)):
            logits = model.eval()(xe)[:, list(cols)]  # the task's head: its two columns
            hand = (torch.tensor(cols)[logits.argmax(-1)] == ye).float().mean().item()
            assert R[1, j] == pytest.approx(hand)
    # told the task, the old task survives naive training on the new one far better
    single_head = train_sequentially(_mlp(), tasks, _cfg(), "naive", eval_sets=tests)
    assert R[1, 0] > single_head[1, 0] + 0.4


@pytest.mark.parametrize("method", ["ewc", "replay", "lwf"])
def test_every_method_trains_with_heads(method):
    tasks, tests = _two_tasks()
    settings = ContinualConfig(fisher="exact", fisher_samples=32, replay_capacity=20)
    logs = []
    R = train_sequentially(
        _mlp(),
        tasks,
        _cfg(steps=20),
        method,
        settings=settings,
        eval_sets=tests,
        heads=((0, 1), (2, 3)),
        on_task_end=lambda t, trainer: logs.append(trainer.history),
    )
    assert np.isfinite(R).all() and R[0, 0] > 0.9
    extra = {"ewc": "ewc_penalty", "replay": "ce", "lwf": "distill"}[method]
    _, values = logs[1].series(extra)
    assert len(values) and np.isfinite(values).all()


def test_heads_must_match_the_tasks_labels():
    tasks, _ = _two_tasks()
    with pytest.raises(ValueError, match="expected one per task"):
        train_sequentially(_mlp(), tasks, _cfg(), heads=((0, 1),))
    with pytest.raises(ValueError, match="distinct class ids"):
        train_sequentially(_mlp(), tasks, _cfg(), heads=((0, 1), (1, 2)))
    x, y = load_digits("train")
    relabelled = split_tasks(x, y, ((0, 1), (2, 3)), scenario="task")
    with pytest.raises(ValueError, match="outside its head"):
        train_sequentially(_mlp(), relabelled, _cfg(), heads=((0, 1), (2, 3)))
