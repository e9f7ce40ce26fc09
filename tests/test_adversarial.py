import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genai_course import adversarial, data
from genai_course.pretrained import load_pretrained
from genai_course.train import TensorLoader, TrainConfig, Trainer


@pytest.fixture(scope="module")
def digits():
    x, y = data.load_mnist("test")
    return x[:200], y[:200]


@pytest.fixture(scope="module")
def classifier():
    return load_pretrained("digit-classifier")


def _mean_loss(model, x, y):
    with torch.no_grad():
        return F.cross_entropy(model(x), y).item()


@pytest.mark.parametrize("name", ["fgsm", "pgd"])
def test_perturbations_stay_within_eps_and_the_pixel_range(name, digits, classifier):
    x, y = digits
    for eps in (0.05, 0.3):
        x_adv = adversarial.attack(name, classifier, x, y, eps)
        assert x_adv.shape == x.shape and not x_adv.requires_grad
        assert (x_adv - x).abs().max() <= eps + 1e-6
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        assert (x_adv - x).abs().max() > eps / 2  # it did move


def test_fgsm_increases_the_loss_of_a_trained_model(digits, classifier):
    x, y = digits
    clean = _mean_loss(classifier, x, y)
    attacked = _mean_loss(classifier, adversarial.fgsm(classifier, x, y, 0.1), y)
    assert attacked > clean + 0.5


@pytest.mark.slow
def test_pgd_is_at_least_as_strong_as_fgsm(digits, classifier):
    x, y = digits
    g = torch.Generator().manual_seed(0)
    x_fgsm = adversarial.fgsm(classifier, x, y, 0.1)
    x_pgd = adversarial.pgd(classifier, x, y, 0.1, steps=10, generator=g)
    assert _mean_loss(classifier, x_pgd, y) >= _mean_loss(classifier, x_fgsm, y)
    fgsm_acc = adversarial.robust_accuracy(classifier, x, y, 0.1, attack_name="fgsm")
    pgd_acc = adversarial.robust_accuracy(classifier, x, y, 0.1, steps=10, generator=g)
    assert pgd_acc <= fgsm_acc
    assert adversarial.robust_accuracy(classifier, x, y, 0.0) == pytest.approx(
        classifier.accuracy(x, y)
    )


def test_fgsm_on_a_linear_model_moves_the_margin_by_eps_times_the_l1_norm():
    # two classes, logits W x: the loss gradient is parallel to w1 - w0, so FGSM shifts the
    # logit difference by exactly eps * ||w1 - w0||_1 against the true class (no clipping)
    torch.manual_seed(0)
    model = nn.Linear(20, 2, bias=False)
    x = torch.full((4, 20), 0.5)
    y = torch.tensor([0, 1, 0, 1])
    eps = 0.01
    w = model.weight.detach()
    margin = lambda z: z @ (w[1] - w[0])  # noqa: E731
    shift = margin(adversarial.fgsm(model, x, y, eps)) - margin(x)
    expected = eps * (w[1] - w[0]).abs().sum() * torch.where(y == 0, 1.0, -1.0)
    torch.testing.assert_close(shift, expected)


def test_pgd_random_start_is_reproducible_and_zero_eps_is_the_identity(digits, classifier):
    x, y = digits[0][:16], digits[1][:16]
    a = adversarial.pgd(classifier, x, y, 0.1, generator=torch.Generator().manual_seed(3))
    b = adversarial.pgd(classifier, x, y, 0.1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert torch.equal(adversarial.pgd(classifier, x, y, 0.0), x)
    assert torch.equal(adversarial.fgsm(classifier, x, y, 0.0), x)


def test_pgd_restarts_keep_an_example_fooled_by_any_restart_so_accuracy_never_rises(
    digits, classifier
):
    x, y = digits[0][:64], digits[1][:64]
    g = torch.Generator().manual_seed(0)  # three single restarts, one after the other
    fooled = torch.stack(
        [
            classifier.predict(adversarial.pgd(classifier, x, y, 0.1, steps=3, generator=g)) != y
            for _ in range(3)
        ]
    )  # (3, 64)
    assert (fooled[1:] & ~fooled[0]).any()  # later starts find examples the first missed
    x_adv = adversarial.pgd(
        classifier, x, y, 0.1, steps=3, restarts=3, generator=torch.Generator().manual_seed(0)
    )
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    wrong = classifier.predict(x_adv) != y
    assert torch.equal(wrong, fooled.any(0))  # robust only if every restart failed
    one_start = adversarial.robust_accuracy(
        classifier, x, y, 0.1, steps=3, generator=torch.Generator().manual_seed(0)
    )
    assert one_start == pytest.approx(1 - fooled[0].float().mean().item())
    assert one_start > 1 - wrong.float().mean().item()
    with pytest.raises(ValueError, match="restarts must be"):
        adversarial.pgd(classifier, x, y, 0.1, restarts=0)
    with pytest.raises(ValueError, match="random_start"):
        adversarial.pgd(classifier, x, y, 0.1, restarts=2, random_start=False)


def test_attacks_leave_parameter_gradients_and_mode_alone(digits, classifier):
    x, y = digits[0][:8], digits[1][:8]
    classifier.train()
    adversarial.pgd(classifier, x, y, 0.1, steps=2)
    assert classifier.training
    assert all(p.grad is None for p in classifier.parameters())
    adversarial.robust_accuracy(classifier, x, y, 0.1, steps=2)
    assert classifier.training
    classifier.eval()


def test_bad_input_is_refused(digits, classifier):
    x, y = digits[0][:4], digits[1][:4]
    with pytest.raises(ValueError, match="valid range"):
        adversarial.fgsm(classifier, x * 255, y, 0.1)
    with pytest.raises(ValueError, match="int64"):
        adversarial.fgsm(classifier, x, y.float(), 0.1)
    with pytest.raises(ValueError, match="eps"):
        adversarial.pgd(classifier, x, y, -0.1)
    with pytest.raises(ValueError, match="steps"):
        adversarial.pgd(classifier, x, y, 0.1, steps=0)
    with pytest.raises(ValueError, match="known: fgsm, pgd"):
        adversarial.attack("cw", classifier, x, y, 0.1)


def test_adversarial_loss_trains_through_the_trainer(digits):
    x, y = digits
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    loss = adversarial.AdversarialLoss(eps=0.1, steps=2, clean_weight=0.5)
    trainer = Trainer(
        model,
        TensorLoader(x, y, batch_size=50),
        TrainConfig(steps=30, lr=1e-2, progress=False, log_every=10),
        loss_fn=loss,
    )
    trainer.fit()
    assert {"train_loss", "acc", "clean_acc"} <= set(trainer.history.keys())
    before = adversarial.robust_accuracy(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), x, y, 0.1)
    assert adversarial.robust_accuracy(model, x, y, 0.1, steps=5) > before
    with pytest.raises(ValueError, match="clean_weight"):
        adversarial.AdversarialLoss(clean_weight=1.5)


def test_adversarial_loss_without_random_start_trains_on_the_fgsm_examples(digits, classifier):
    # steps=1, step_size=eps, no random start: the training batch is exactly FGSM's
    x, y = digits[0][:32], digits[1][:32]
    seen = []
    model = copy.deepcopy(classifier).eval()
    hook = model.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    loss = adversarial.AdversarialLoss(eps=0.1, steps=1, step_size=0.1, random_start=False)
    loss(model, (x, y))
    hook.remove()
    torch.testing.assert_close(seen[-1], adversarial.fgsm(classifier, x, y, 0.1))


@pytest.mark.slow
def test_shipped_robust_classifier_keeps_its_accuracy_inside_the_ball_and_the_standard_one_does_not(
    digits, classifier
):
    x, y = digits
    robust = load_pretrained("digit-classifier-robust")

    def pgd10(model):
        g = torch.Generator().manual_seed(0)
        return adversarial.robust_accuracy(model, x, y, 0.1, steps=10, generator=g)

    assert adversarial.robust_accuracy(robust, x, y, 0.0) >= 0.90
    assert pgd10(robust) >= 0.70
    assert pgd10(classifier) <= 0.30


def test_relu_maxpool_kinks_finds_ties_and_zeros_where_they_are():
    net = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2))
    off = adversarial.relu_maxpool_kinks(net, torch.zeros(2, 3, 4, 4))
    assert [r["kind"] for r in off] == ["relu", "maxpool"]
    assert off[0]["exactly_zero"] == 1.0  # every ReLU at its kink
    assert off[1]["tied"] == 1.0 and off[1]["tied_above_zero"] == 0.0  # tied, but flat
    flat = adversarial.relu_maxpool_kinks(net, torch.full((2, 3, 4, 4), 0.5))
    assert flat[0]["exactly_zero"] == 0.0 and flat[1]["tied_above_zero"] == 1.0
    # continuous random inputs: no input is exactly 0 and no window is tied above 0, while
    # windows of several switched-off units are tied at 0
    noise = adversarial.relu_maxpool_kinks(
        net, torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    )
    assert noise[0]["exactly_zero"] == 0.0 and noise[1]["tied_above_zero"] == 0.0
    assert 0 < noise[1]["tied"] < 1


def test_relu_maxpool_kinks_of_the_classifier_are_max_pool_ties_on_clean_digits(digits, classifier):
    x = digits[0][:32].double()
    m64 = copy.deepcopy(classifier).double().eval()
    jitter = 0.01 * torch.rand(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
    clean = adversarial.relu_maxpool_kinks(m64, x)
    noisy = adversarial.relu_maxpool_kinks(m64, x + jitter)
    assert all(r["exactly_zero"] == 0 for r in clean + noisy if r["kind"] == "relu")
    pools = [r for r in clean if r["kind"] == "maxpool"]
    assert pools[0]["tied"] > 0.5 and pools[0]["tied_above_zero"] > 0.2  # the blank background
    assert all(r["tied_above_zero"] == 0 for r in noisy if r["kind"] == "maxpool")


def test_relu_maxpool_kinks_refuses_padded_pools():
    with pytest.raises(ValueError, match="unpadded"):
        adversarial.relu_maxpool_kinks(nn.MaxPool2d(2, padding=1), torch.zeros(1, 1, 4, 4))
