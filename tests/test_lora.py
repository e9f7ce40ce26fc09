"""LoRA and adapters: exact start, merging, freezing, parameter counts, saving and loading."""

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from genai_course.models.gpt import GPT, Block, GPTConfig
from genai_course.models.lora import (
    Adapter,
    LoRAConfig,
    LoRALinear,
    add_adapters,
    add_lora,
    count_parameters,
    load_adapters,
    lora_state_dict,
    matches_target,
    merge_lora,
    save_adapters,
    trainable_parameters,
    unmerge_lora,
)

C, LAYERS, V = 16, 2, 11


def _gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=V, block_size=16, n_layer=LAYERS, n_head=2, n_embd=C, dropout=0)
    return GPT(config).eval()


def _tokens(seed: int = 1) -> torch.Tensor:
    return torch.randint(V, (3, 12), generator=torch.Generator().manual_seed(seed))


def _train(model: nn.Module, steps: int = 5, lr: float = 0.05) -> None:
    """A few Adam steps on random next-token data, so every LoRA B and adapter up is non-zero."""
    x = _tokens(2)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        loss = model.loss((x[:, :-1], x[:, 1:]))
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_zero_initialised_lora_leaves_gpt_logits_unchanged():
    model = _gpt()
    x = _tokens()
    before, _ = model(x)
    names = add_lora(model, LoRAConfig(rank=4, targets=("qkv", "proj")))
    assert names == [
        f"blocks.{i}.{m}" for i in range(LAYERS) for m in ("attn.qkv", "attn.proj", "mlp.proj")
    ]
    layer = model.blocks[0].attn.qkv
    assert isinstance(layer, LoRALinear)
    assert torch.all(layer.lora_B == 0) and layer.lora_A.abs().sum() > 0
    after, _ = model(x)
    assert torch.equal(before, after)
    assert model.head.weight is model.wte.weight  # the tie survives


def test_lora_keeps_the_base_state_dict_keys():
    model = _gpt()
    keys = set(model.state_dict())
    add_lora(model, LoRAConfig(rank=2, targets=("fc",)))
    new = set(model.state_dict()) - keys
    assert set(model.state_dict()) >= keys
    assert new == {f"blocks.{i}.mlp.fc.lora_{ab}" for i in range(LAYERS) for ab in "AB"}


def test_merged_and_unmerged_outputs_agree_and_unmerge_restores_the_base_weight():
    model = _gpt()
    add_lora(model, LoRAConfig(rank=4, alpha=8, targets=("qkv", "proj", "fc")))
    w0 = model.blocks[1].mlp.fc.weight.detach().clone()
    _train(model)
    assert all(m.lora_B.abs().sum() > 0 for m in model.modules() if isinstance(m, LoRALinear))
    x = _tokens()
    unmerged, _ = model(x)

    merge_lora(model)
    merged, _ = model(x)
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(model.blocks[1].mlp.fc.weight, w0)  # the update is in W now
    merge_lora(model)  # a second merge must not add the update twice
    torch.testing.assert_close(model(x)[0], unmerged, atol=1e-5, rtol=1e-5)

    unmerge_lora(model)
    torch.testing.assert_close(model.blocks[1].mlp.fc.weight, w0, atol=1e-6, rtol=0)
    torch.testing.assert_close(model(x)[0], unmerged, atol=1e-5, rtol=1e-5)


def test_only_adapter_parameters_get_gradients_and_a_step_leaves_the_base_bit_identical():
    model = _gpt()
    add_lora(model, LoRAConfig(rank=2, targets=("qkv",)))
    add_adapters(model, ("mlp",), bottleneck=4)
    base = {k: v.clone() for k, v in model.state_dict().items() if k not in lora_state_dict(model)}
    x = _tokens()
    model.loss((x[:, :-1], x[:, 1:])).backward()
    adapter_names = set(lora_state_dict(model))
    for name, p in model.named_parameters():
        if name in adapter_names:
            assert p.requires_grad and p.grad is not None, name
        else:
            assert not p.requires_grad and p.grad is None, name
    # all parameters go to the optimiser, weight decay included: frozen ones must not move
    torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1).step()
    for k, v in base.items():
        assert torch.equal(model.state_dict()[k], v), k
    assert model.head.weight is model.wte.weight


def test_trainable_parameter_count_is_rank_times_in_plus_out_per_adapted_layer():
    model = _gpt()
    total = sum(p.numel() for p in model.parameters())
    r = 3
    add_lora(model, LoRAConfig(rank=r, targets=("qkv", "attn.proj", "fc")))
    per_block = r * (C + 3 * C) + r * (C + C) + r * (C + 4 * C)
    assert trainable_parameters(model) == LAYERS * per_block
    assert count_parameters(model) == (LAYERS * per_block, total + LAYERS * per_block)

    b = 4
    add_adapters(model, ("mlp",), bottleneck=b)
    per_adapter = 2 * C * b + b + C  # W_down, b_down, W_up, b_up
    assert trainable_parameters(model) == LAYERS * (per_block + per_adapter)


def test_adapter_starts_as_the_identity_and_becomes_a_residual_mlp():
    h = torch.randn(5, 7, 8)
    for layer_norm in (False, True):
        adapter = Adapter(8, 3, layer_norm=layer_norm)
        assert torch.equal(adapter(h), h)
    with torch.no_grad():
        adapter.up.weight.normal_()
    assert not torch.allclose(adapter(h), h)
    with pytest.raises(ValueError, match="width 8"):
        adapter(torch.randn(2, 9))


def test_adapters_on_gpt_mlps_and_whole_blocks_start_as_identity():
    model = _gpt()
    x = _tokens()
    before, _ = model(x)
    assert add_adapters(model, ("mlp",), bottleneck=4) == [f"blocks.{i}.mlp" for i in range(LAYERS)]
    assert add_adapters(model, (Block,), bottleneck=4) == [f"blocks.{i}" for i in range(LAYERS)]
    after, _ = model(x)
    assert torch.equal(before, after)
    with torch.no_grad():
        model.blocks[1].adapter.up.bias.fill_(0.5)  # the block's adapter is on its hidden output
    assert not torch.allclose(model(x)[0], before)
    with pytest.raises(ValueError, match="already has an adapter"):
        add_adapters(model, ("blocks.0.mlp",))


def test_targets_match_by_dotted_suffix_or_by_glob_pattern():
    assert matches_target("blocks.0.attn.proj", ["proj"])
    assert matches_target("blocks.0.attn.proj", ["attn.proj"])
    assert not matches_target("blocks.0.mlp.proj", ["attn.proj"])
    assert not matches_target("blocks.0.attn.proj", ["roj"])  # a suffix starts after a dot
    assert matches_target("blocks.1.mlp.fc", ["blocks.1.*"])
    assert not matches_target("blocks.0.mlp.fc", ["blocks.1.*"])
    model = _gpt()
    assert add_lora(model, LoRAConfig(rank=2, targets=("blocks.1.*",))) == [
        "blocks.1.attn.qkv",
        "blocks.1.attn.proj",
        "blocks.1.mlp.fc",
        "blocks.1.mlp.proj",
    ]


def test_add_lora_with_targets_matching_nothing_lists_the_linear_layers():
    with pytest.raises(ValueError, match=r"matches targets \('query',\).*blocks\.0\.attn\.qkv"):
        add_lora(_gpt(), LoRAConfig(targets=("query",)))


def test_add_lora_refuses_the_tied_head_and_a_second_lora_on_one_layer():
    with pytest.raises(ValueError, match="head.weight is shared with wte.weight"):
        add_lora(_gpt(), LoRAConfig(targets=("head",)))
    model = _gpt()
    add_lora(model, LoRAConfig(targets=("qkv",)))
    with pytest.raises(ValueError, match="already has LoRA"):
        add_lora(model, LoRAConfig(targets=("qkv",)))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(rank=0), "rank must be an integer >= 1"),
        (dict(alpha=0.0), "alpha must be > 0"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
        (dict(targets=()), "targets must be a non-empty"),
    ],
)
def test_lora_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LoRAConfig(**kwargs)


def test_a_single_string_target_is_one_name_not_its_letters():
    assert LoRAConfig(targets="qkv").targets == ("qkv",)


def test_lora_and_adapters_work_on_a_plain_sequential():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 3))
    x = torch.randn(4, 6)
    before = net(x)
    assert add_lora(net, LoRAConfig(rank=2, targets=("0", "2"))) == ["0", "2"]
    assert add_adapters(net, ("0",), bottleneck=2) == ["0"]  # width from the LoRALinear: 10
    assert torch.equal(net(x), before)
    assert trainable_parameters(net) == 2 * (6 + 10) + 2 * (10 + 3) + (2 * 10 * 2 + 2 + 10)
    with pytest.raises(ValueError, match="pass dim="):
        add_adapters(net, ("1",))  # a ReLU has no width of its own
    assert add_adapters(net, ("1",), dim=10) == ["1"]


def test_saved_adapters_reload_onto_a_fresh_base_and_reproduce_the_outputs(tmp_path):
    config = LoRAConfig(rank=4, alpha=4, targets=("qkv", "proj"))
    model = _gpt(seed=0)
    add_lora(model, config)
    add_adapters(model, ("mlp",), bottleneck=4, layer_norm=True)
    _train(model)
    x = _tokens()
    expected, _ = model(x)
    path = save_adapters(model, tmp_path / "adapters.safetensors")
    assert set(load_file(path)) == set(lora_state_dict(model))  # no base weight in the file
    assert not any(k.endswith(".weight") and "adapter" not in k for k in load_file(path))
    assert [p.name for p in tmp_path.iterdir()] == ["adapters.safetensors"]

    fresh = _gpt(seed=0)  # the same base, new random LoRA A
    add_lora(fresh, config)
    add_adapters(fresh, ("mlp",), bottleneck=4, layer_norm=True)
    assert not torch.allclose(fresh(x)[0], expected)
    load_adapters(fresh, path)
    torch.testing.assert_close(fresh(x)[0], expected)


def test_load_adapters_rejects_missing_and_unexpected_keys_shapes_and_scaling(tmp_path):
    path = tmp_path / "a.safetensors"
    model = _gpt()
    add_lora(model, LoRAConfig(rank=4, alpha=4, targets=("qkv",)))
    save_adapters(model, path)

    def adapted(**kw):
        m = _gpt()
        add_lora(m, LoRAConfig(**{"rank": 4, "alpha": 4, "targets": ("qkv",), **kw}))
        return m

    with pytest.raises(
        ValueError,
        match=r"blocks\.0\.attn\.qkv\.lora_A has shape \(4, 16\) in the file but \(2, 16\)",
    ):
        load_adapters(adapted(rank=2, alpha=2), path)
    with pytest.raises(ValueError, match=r"missing from the file: blocks\.0\.attn\.proj\.lora_A"):
        load_adapters(adapted(targets=("qkv", "attn.proj")), path)
    with pytest.raises(ValueError, match=r"in the file but not in the model: blocks\.1\.attn\.qkv"):
        load_adapters(adapted(targets=("blocks.0.attn.qkv",)), path)
    with pytest.raises(ValueError, match=r"scaling alpha/r = 1, the model uses 2"):
        load_adapters(adapted(alpha=8), path)
    with pytest.raises(ValueError, match="no LoRA layers or adapters"):
        load_adapters(_gpt(), path)
    merged = adapted()
    merge_lora(merged)
    with pytest.raises(ValueError, match="unmerge_lora"):
        load_adapters(merged, path)

    # a file missing one tensor: the model's A stays as it was (nothing is half-loaded)
    tensors = load_file(path)
    del tensors["blocks.1.attn.qkv.lora_B"]
    save_file(tensors, tmp_path / "b.safetensors")
    target = adapted()
    a_before = target.blocks[0].attn.qkv.lora_A.detach().clone()
    with pytest.raises(ValueError, match=r"missing from the file: blocks\.1\.attn\.qkv\.lora_B"):
        load_adapters(target, tmp_path / "b.safetensors")
    assert torch.equal(target.blocks[0].attn.qkv.lora_A, a_before)


def test_lora_of_rank_r_fits_a_rank_r_update_exactly_and_rank_r_minus_1_cannot():
    d_in, d_out, r = 16, 12, 2
    g = torch.Generator().manual_seed(0)
    update = 0.1 * torch.randn(d_out, r, generator=g) @ torch.randn(r, d_in, generator=g)
    x = torch.randn(256, d_in, generator=g)  # full column rank: the best fit is unique
    sigma = torch.linalg.svdvals(update)
    errors = {}
    for rank in (r, r - 1):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(d_in, d_out, bias=False))
        y = x @ (net[0].weight + update).T.detach()
        add_lora(net, LoRAConfig(rank=rank, alpha=rank, targets=("0",)))
        opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-2)
        for _ in range(400):
            loss = (net(x) - y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        errors[rank] = (net[0].delta_weight() - update).norm().item() / update.norm().item()
    assert errors[r] < 1e-3
    # Eckart-Young: no rank r - 1 matrix is closer than the r-th singular value
    assert errors[r - 1] > 0.99 * (sigma[r - 1] / update.norm()).item()


def test_houlsby_placement_puts_two_identity_adapters_in_each_block():
    model = _gpt()
    x = _tokens()
    before, _ = model(x)
    names = add_adapters(model, ("attn", "mlp"), bottleneck=4)
    assert names == [f"blocks.{i}.{m}" for i in range(LAYERS) for m in ("attn", "mlp")]
    assert torch.equal(model(x)[0], before)
    with torch.no_grad():
        model.blocks[0].attn.adapter.up.bias.fill_(0.5)  # on the attention's output, not its cache
    assert not torch.allclose(model(x)[0], before)


def test_a_new_adapter_first_gets_gradient_in_its_up_projection_only():
    adapter = Adapter(8, 3)
    adapter(torch.randn(5, 8)).pow(2).sum().backward()
    assert adapter.up.weight.grad.abs().sum() > 0 and adapter.up.bias.grad.abs().sum() > 0
    assert torch.count_nonzero(adapter.down.weight.grad) == 0  # W_up = 0 blocks the way back
    assert torch.count_nonzero(adapter.down.bias.grad) == 0
