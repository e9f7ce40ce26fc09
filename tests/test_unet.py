"""The U-Net of chapters 12-13 (the noise predictor): shapes, conditioning and clear errors."""

import pytest
import torch

from genai_course.models.unet import UNet, UNetConfig, timestep_embedding


def _inputs(b=4, c=1, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, h, w, generator=g), torch.randint(0, 1000, (b,), generator=g)


# ----------------------------------------------------------------------------------------------
# shapes and size


def test_default_unet_maps_mnist_batches_to_their_own_shape_with_about_a_million_parameters():
    net = UNet()
    params = sum(p.numel() for p in net.parameters())
    assert 500_000 <= params <= 2_000_000, params
    x, t = _inputs(b=2, h=28, w=28)
    with torch.no_grad():
        assert net(x, t).shape == (2, 1, 28, 28)


@pytest.mark.parametrize(
    "shape, kw",
    [
        ((3, 3, 16, 12), dict(channels=3)),  # non-square, three channels
        ((2, 1, 8, 8), dict(blocks_per_level=2, scale_shift=False)),
        ((2, 1, 8, 8), dict(channel_mults=(1,), attention_levels=(0,), middle_attention=False)),
        ((1, 1, 16, 16), dict(channel_mults=(1, 2, 2), attention_levels=(1, 2))),
    ],
)
def test_output_shape_equals_input_shape_for_any_architecture(shape, kw, tiny_unet):
    net = tiny_unet(**kw)
    x, t = _inputs(*shape)
    assert net(x, t).shape == x.shape


def test_timestep_embedding_is_sin_then_cos_of_geometric_frequencies():
    t = torch.tensor([0.0, 1.0, 250.5])
    e = timestep_embedding(t, 8)
    assert e.shape == (3, 8)
    torch.testing.assert_close(e[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    freqs = 10_000.0 ** (-torch.arange(4) / 4)
    torch.testing.assert_close(e[2, :4], torch.sin(250.5 * freqs))
    torch.testing.assert_close(e[2, 4:], torch.cos(250.5 * freqs))
    with pytest.raises(ValueError, match="even"):
        timestep_embedding(t, 7)


# ----------------------------------------------------------------------------------------------
# conditioning


def test_timestep_changes_the_output_and_fractional_timesteps_are_accepted(tiny_unet):
    net = tiny_unet()
    x, _ = _inputs(b=2)
    out_a = net(x, torch.tensor([3, 3]))
    out_b = net(x, torch.tensor([700, 700]))
    assert (out_a - out_b).abs().max() > 1e-3
    out_c = net(x, torch.tensor([3.5, 3.5]))
    assert (out_a - out_c).abs().max() > 0  # a float time is a different time, not an error


def test_class_label_changes_the_output_and_the_null_class_means_no_label(tiny_unet):
    net = tiny_unet(num_classes=3)
    x, t = _inputs(b=2)
    out0 = net(x, t, torch.tensor([0, 0]))
    out2 = net(x, t, torch.tensor([2, 2]))
    assert (out0 - out2).abs().max() > 1e-3
    null = net(x, t, torch.tensor([3, 3]))  # index num_classes: "no label"
    torch.testing.assert_close(null, net(x, t))  # y=None is the null class for everyone
    assert (null - out0).abs().max() > 1e-3


def test_condition_vector_changes_the_output_and_zeros_mean_no_condition(tiny_unet):
    net = tiny_unet(cond_dim=5)
    x, t = _inputs(b=2)
    cond = torch.randn(2, 5)
    assert (net(x, t, cond=cond) - net(x, t)).abs().max() > 1e-3
    torch.testing.assert_close(net(x, t, cond=torch.zeros(2, 5)), net(x, t))


def test_each_example_is_predicted_independently_of_the_rest_of_the_batch(tiny_unet):
    # guidance stacks conditional and unconditional inputs into one batch: that must not
    # change either prediction (group norm, not batch norm)
    net = tiny_unet(num_classes=3)
    x, t = _inputs(b=4)
    y = torch.tensor([0, 1, 2, 3])
    full = net(x, t, y)
    for i in range(4):
        torch.testing.assert_close(net(x[i : i + 1], t[i : i + 1], y[i : i + 1]), full[i : i + 1])


def test_dropout_acts_in_training_mode_only(tiny_unet):
    net = tiny_unet(dropout=0.5)
    x, t = _inputs(b=2)
    torch.testing.assert_close(net(x, t), net(x, t))
    net.train()
    assert (net(x, t) - net(x, t)).abs().max() > 1e-4


def test_gradients_reach_every_parameter(tiny_unet):
    net = tiny_unet(num_classes=3, cond_dim=5, blocks_per_level=2).train()
    x, t = _inputs(b=4)
    out = net(x, t, torch.tensor([0, 1, 2, 3]), torch.randn(4, 5))
    out.pow(2).mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing
    # attention is really there: at the 4x4 level and in the middle
    assert any("attns" in n for n, _ in net.named_parameters())
    assert any("mid_attn" in n for n, _ in net.named_parameters())


# ----------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    "make_args, match",
    [
        (lambda x, t: (torch.randn(2, 3, 8, 8), t), r"\(B, 1, H, W\)"),
        (lambda x, t: (torch.randn(2, 1, 8, 7), t), "divisible by 2"),
        (lambda x, t: (x[0], t), r"\(B, 1, H, W\)"),
        (lambda x, t: (x, t[:1]), r"t of shape \(2,\)"),
        (lambda x, t: (x, t[:, None]), r"t of shape \(2,\)"),
        (lambda x, t: (x, t, torch.tensor([0, 4])), r"in \[0, 3\]"),
        (lambda x, t: (x, t, torch.tensor([-1, 0])), r"in \[0, 3\]"),
        (lambda x, t: (x, t, torch.tensor([0.0, 1.0])), "integer labels"),
        (lambda x, t: (x, t, None, torch.randn(2, 5)), "cond_dim=0"),
    ],
)
def test_bad_inputs_raise_errors_that_say_what_was_expected(make_args, match, tiny_unet):
    net = tiny_unet(num_classes=3)
    x, t = _inputs(b=2)
    with pytest.raises(ValueError, match=match):
        net(*make_args(x, t))


def test_labels_or_vectors_given_to_a_model_without_them_are_rejected(tiny_unet):
    x, t = _inputs(b=2)
    with pytest.raises(ValueError, match="not class-conditional"):
        tiny_unet()(x, t, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\(2, 5\)"):
        tiny_unet(cond_dim=5)(x, t, cond=torch.randn(2, 4))


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(attention_levels=(2,)), "do not exist"),
        (dict(norm_groups=3), "norm_groups"),
        (dict(attention_heads=3), "attention_heads"),
        (dict(dropout=1.0), "dropout"),
        (dict(channel_mults=()), "channel_mults"),
        (dict(num_classes=-1), "num_classes"),
        (dict(emb_dim=7), "emb_dim"),
    ],
)
def test_config_rejects_inconsistent_settings(kw, match):
    base = dict(base_width=8, channel_mults=(1, 2), attention_levels=(1,), norm_groups=4)
    base.update(kw)
    with pytest.raises(ValueError, match=match):
        UNetConfig(**base)


def test_config_widths_and_downsample_factor_follow_the_multipliers():
    cfg = UNetConfig(base_width=16, channel_mults=(1, 2, 4), attention_levels=(2,))
    assert cfg.widths == (16, 32, 64)
    assert cfg.downsample_factor == 4
    assert cfg.embedding_dim == 64
    assert UNetConfig(emb_dim=10, attention_levels=()).embedding_dim == 10
