"""Neural style transfer: Gram matrices, the losses, the feature networks, the optimisation."""

import importlib.util
import sys
import types

import pytest
import torch
from torch import nn

from genai_course.data import load_image
from genai_course.style import (
    VGG19_WEIGHTS_FILE,
    RandomFeatures,
    StyleTransferConfig,
    VGGFeatures,
    check_rgb,
    content_loss,
    feature_network,
    gram_matrix,
    style_loss,
    style_transfer,
    total_variation,
)


@pytest.fixture(scope="module")
def cat():
    return load_image("chelsea", size=32)  # (3, 32, 48)


@pytest.fixture(scope="module")
def coffee():
    return load_image("coffee", size=40)  # (3, 40, 60): not the content's size


# Gram matrices and losses


def test_gram_matrix_matches_hand_computation():
    features = torch.randn(2, 3, 4, 5)
    expected = torch.zeros(2, 3, 3)
    for b in range(2):
        for c in range(3):
            for d in range(3):
                expected[b, c, d] = (features[b, c] * features[b, d]).sum() / (3 * 4 * 5)
    gram = gram_matrix(features)
    assert gram.shape == (2, 3, 3)
    assert torch.allclose(gram, expected, atol=1e-6)
    assert torch.allclose(gram, gram.transpose(1, 2))
    assert (torch.linalg.eigvalsh(gram) >= -1e-6).all()


def test_gram_matrix_is_invariant_to_shuffling_positions():
    features = torch.randn(1, 8, 6, 7)
    shuffled = features.flatten(2)[:, :, torch.randperm(42)].reshape(features.shape)
    assert torch.allclose(gram_matrix(shuffled), gram_matrix(features), atol=1e-6)
    # what the Gram matrix forgets, the content loss sees
    assert content_loss(shuffled, features) > 0.5


def test_gram_matrix_rejects_a_map_that_is_not_4d():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        gram_matrix(torch.randn(8, 6, 7))


def test_style_loss_is_the_weighted_squared_frobenius_distance():
    features = [torch.randn(2, 4, 5, 5), torch.randn(2, 3, 6, 6)]
    grams = [gram_matrix(f) for f in features]
    zeros = [torch.zeros(1, 4, 4), torch.zeros(1, 3, 3)]  # one target for the whole batch
    per_layer = [g.square().sum(dim=(1, 2)).mean() for g in grams]
    weighted = style_loss(features, zeros, weights=[2.0, 0.5])
    assert torch.allclose(weighted, 2.0 * per_layer[0] + 0.5 * per_layer[1])
    # by default every layer weighs 1 / (number of layers)
    assert torch.allclose(style_loss(features, zeros), (per_layer[0] + per_layer[1]) / 2)


def test_losses_vanish_at_their_targets(cat):
    net = RandomFeatures()
    maps = net(cat)
    grams = [gram_matrix(maps[i]) for i in net.style_layers]
    assert style_loss([maps[i] for i in net.style_layers], grams).item() == pytest.approx(
        0, abs=1e-12
    )
    assert content_loss(maps[net.content_layer], maps[net.content_layer]).item() == 0.0
    assert total_variation(torch.full((3, 8, 8), 0.3)).item() == 0.0


def test_total_variation_of_a_checkerboard_and_of_stripes():
    rows, cols = torch.meshgrid(torch.arange(4), torch.arange(6), indexing="ij")
    checkerboard = torch.where((rows + cols) % 2 == 0, 0.2, 0.7).expand(3, -1, -1)
    # every vertical and every horizontal neighbour differs by 0.5
    assert total_variation(checkerboard).item() == pytest.approx(0.5 + 0.5)
    stripes = torch.where(cols % 2 == 0, 0.2, 0.7).float().expand(2, 3, -1, -1)
    assert total_variation(stripes).item() == pytest.approx(0.5)


def test_content_loss_rejects_maps_of_another_size():
    with pytest.raises(ValueError, match="same H, W"):
        content_loss(torch.zeros(1, 4, 8, 8), torch.zeros(1, 4, 8, 12))


# feature networks


def test_random_features_keep_the_image_size_and_pool_the_content_map():
    net = RandomFeatures()
    maps = net(torch.rand(2, 3, 32, 40))
    assert len(maps) == len(net.kernel_sizes) + 1
    assert net.style_layers == tuple(range(len(net.kernel_sizes)))
    assert net.content_layer == len(net.kernel_sizes)
    for i in net.style_layers:
        assert maps[i].shape == (2, net.channels, 32, 40)
    assert maps[net.content_layer].shape == (2, net.channels, 8, 10)
    assert all((m >= 0).all() for m in maps)  # after a ReLU


def test_random_features_are_deterministic_for_a_seed():
    image = torch.rand(1, 3, 16, 16)
    first, again, other = RandomFeatures(seed=0), RandomFeatures(seed=0), RandomFeatures(seed=1)
    assert all(torch.equal(a, b) for a, b in zip(first(image), again(image)))
    assert not torch.allclose(first(image)[1], other(image)[1])


def test_random_filters_are_zero_mean_and_unit_norm():
    net = RandomFeatures()
    for k, conv in zip(net.kernel_sizes, net.convs):
        w = conv.weight.flatten(1)  # (channels, 3 k k)
        assert torch.allclose(w.norm(dim=1), torch.ones(len(w)), atol=1e-5)
        if k > 1:  # 1x1 filters stay uncentred: they carry the colours
            assert w.mean(dim=1).abs().max() < 1e-6


def test_random_features_are_frozen_and_pass_gradients_to_the_pixels_only():
    net = RandomFeatures()
    assert not net.training
    assert all(not p.requires_grad for p in net.parameters())
    image = torch.rand(1, 3, 16, 16, requires_grad=True)
    sum(m.square().mean() for m in net(image)).backward()
    assert all(p.grad is None for p in net.parameters())
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_random_features_reject_images_too_small_for_their_filters():
    with pytest.raises(ValueError, match="at least 8 pixels"):
        RandomFeatures()(torch.rand(1, 3, 6, 6))


def test_unknown_feature_network_lists_the_known_ones():
    with pytest.raises(ValueError, match="random.*vgg19"):
        feature_network("resnet")


def test_vgg19_without_torchvision_says_how_to_get_it():
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed")
    with pytest.raises(ImportError, match="pip install torchvision") as error:
        feature_network("vgg19")
    assert "RandomFeatures works offline" in str(error.value)


def _tiny_vgg19(weights=None):
    """VGG19's layer sequence with 4 channels per convolution, in torchvision's layout."""
    assert weights is None, "asking torchvision for weights would download them"
    layers, width = [], 3
    for convs in (2, 2, 4, 4, 4):
        for _ in range(convs):
            layers += [nn.Conv2d(width, 4, 3, padding=1), nn.ReLU(inplace=True)]
            width = 4
        layers.append(nn.MaxPool2d(2))
    model = nn.Module()
    model.features = nn.Sequential(*layers)
    return model


def test_vgg19_reads_local_weights_and_never_downloads(monkeypatch, tmp_path):
    fake = types.ModuleType("torchvision")
    fake.models = types.SimpleNamespace(vgg19=_tiny_vgg19)
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(RuntimeError, match="never downloads"):
        VGGFeatures()
    (tmp_path / "checkpoints").mkdir()
    torch.save(_tiny_vgg19().state_dict(), tmp_path / "checkpoints" / VGG19_WEIGHTS_FILE)

    net = feature_network("vgg19")
    maps = net(torch.rand(1, 3, 32, 32))
    sides = [maps[i].shape[-1] for i in net.style_layers]
    assert sides == [32, 16, 8, 4, 2]  # relu1_1 ... relu5_1
    assert maps[net.content_layer].shape == (1, 4, 4, 4)  # relu4_2
    assert all(not p.requires_grad for p in net.parameters())
    conv = VGGFeatures(style=("conv1_1",), content="relu1_1")(torch.rand(1, 3, 8, 8))[0]
    assert (conv < 0).any()  # the in-place ReLU that follows did not overwrite it


# checks


def test_grey_style_is_rejected_with_a_hint(cat):
    grey = load_image("brick", size=16)  # (1, 16, 16)
    with pytest.raises(ValueError, match="RGB") as error:
        style_transfer(cat, grey)
    message = str(error.value)
    assert "(3, H, W)" in message and "(1, 16, 16)" in message
    assert "image.expand(3, -1, -1)" in message


@pytest.mark.parametrize(
    "image",
    [
        torch.full((3, 4, 4), 1.5),
        torch.full((3, 4, 4), -0.1),
        torch.zeros(3, 4, 4, dtype=torch.uint8),
    ],
    ids=["above-1", "below-0", "uint8"],
)
def test_check_rgb_rejects_pixels_outside_the_unit_range(image):
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        check_rgb(image, "style")


def test_check_rgb_accepts_an_image_and_a_batch():
    # the edges of the range are valid pixels; check_rgb only checks (it returns None)
    for image in (
        torch.rand(3, 5, 6),
        torch.rand(2, 3, 5, 6),
        torch.zeros(3, 2, 2),
        torch.ones(3, 2, 2),
    ):
        before = image.clone()
        assert check_rgb(image) is None
        assert torch.equal(image, before)  # left as it was
    # the same shapes with one channel too many, or one pixel just outside, are refused
    with pytest.raises(ValueError, match=r"got .*\(2, 4, 5, 6\)"):
        check_rgb(torch.rand(2, 4, 5, 6))
    bad = torch.rand(2, 3, 5, 6)
    bad[1, 2, 4, 5] = 1.001
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        check_rgb(bad)


@pytest.mark.parametrize(
    "field",
    [{"steps": -1}, {"lr": 0.0}, {"style_weight": -1.0}, {"init": "zeros"}, {"record_every": 0}],
)
def test_config_rejects_bad_values(field):
    with pytest.raises(ValueError):
        StyleTransferConfig(**field)


# the optimisation


def test_style_transfer_lowers_the_loss(cat, coffee):
    config = StyleTransferConfig(steps=20, record_every=5)
    result = style_transfer(cat, coffee, config=config)
    history = result.history
    assert history["step"] == [0, 5, 10, 15, 20]
    assert history["content"][0] == 0.0  # it starts from the content image
    assert history["total"][-1] < 0.5 * history["total"][0]
    assert history["style"][-1] < 0.2 * history["style"][0]
    assert result.image.shape == cat.shape and result.image.device.type == "cpu"
    assert result.image.min() >= 0 and result.image.max() <= 1
    assert [step for step, _ in result.snapshots] == history["step"]
    assert torch.equal(result.snapshots[-1][1], result.image)
    assert result.seconds > 0


def test_texture_synthesis_lowers_the_style_loss_at_the_requested_size():
    brick = load_image("brick", size=48).expand(3, -1, -1)
    config = StyleTransferConfig(steps=20, record_every=10)
    result = style_transfer(None, brick, config=config, size=(24, 40))
    assert result.image.shape == (3, 24, 40)
    assert result.image.min() >= 0 and result.image.max() <= 1
    assert result.history["style"][-1] < 0.5 * result.history["style"][0]
    assert result.history["content"] == [0.0, 0.0, 0.0]


def test_texture_synthesis_is_reproducible_for_a_seed(coffee):
    def run(seed):
        config = StyleTransferConfig(steps=3, seed=seed)
        return style_transfer(None, coffee, config=config, size=16).image

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_style_transfer_leaves_the_network_alone(cat, coffee):
    net = RandomFeatures().requires_grad_(True)
    before = [p.clone() for p in net.parameters()]
    style_transfer(cat, coffee, net, StyleTransferConfig(steps=2))
    assert all(p.grad is None for p in net.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
