"""Chapter 05's VQ-VAE and its code prior: quantisation, gradients and codebook updates checked
against hand computations, then short training runs that must learn."""

import math

import pytest
import torch
import torch.nn.functional as F

from genai_course.data import load_mnist
from genai_course.models.vqvae import (
    VQVAE,
    CodePrior,
    CodePriorConfig,
    VectorQuantizer,
    VQVAEConfig,
    code_perplexity,
    codes_to_sequence,
    encode_dataset,
    position_code_nll,
    sequence_to_codes,
    unigram_code_nll,
)
from genai_course.pretrained import load_pretrained, save_pretrained
from genai_course.train import TrainConfig, Trainer

TINY = {"hidden": (8, 16), "embed_dim": 8, "num_codes": 32}


def _set_codebook(vq: VectorQuantizer, codes: list[list[float]]) -> None:
    with torch.no_grad():
        e = torch.tensor(codes)
        vq.codebook.copy_(e)
        if vq.ema:
            vq.ema_sum.copy_(e)
            vq.ema_count.fill_(1.0)


def _grid_of(vectors: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(h*w, D) raster-order vectors -> (1, D, h, w), the quantiser's input layout."""
    return vectors.T.reshape(1, -1, h, w).contiguous()


# ----------------------------------------------------------------------------------------------
# the quantiser


def test_quantizer_picks_the_nearest_code_like_brute_force_argmin():
    vq = VectorQuantizer(8, 3, ema=False)
    with torch.no_grad():
        vq.codebook.normal_()
    z_e = torch.randn(2, 3, 4, 5)
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, 3)  # (40, 3)
    brute = ((flat[:, None, :] - vq.codebook[None]) ** 2).sum(-1).argmin(1).view(2, 4, 5)

    z_q, codes, _ = vq.eval()(z_e)
    assert codes.dtype == torch.int64 and codes.shape == (2, 4, 5)
    assert torch.equal(codes, brute)
    assert torch.equal(vq.quantize(z_e), brute)
    torch.testing.assert_close(z_q, vq.codebook[brute].permute(0, 3, 1, 2))
    torch.testing.assert_close(vq.lookup(brute), z_q)


def test_straight_through_output_is_quantised_but_gradient_is_identity():
    vq = VectorQuantizer(8, 3, ema=False)
    z_e = torch.randn(2, 3, 4, 4, requires_grad=True)
    z_q, codes, _ = vq(z_e)
    torch.testing.assert_close(z_q, vq.lookup(codes))
    assert not torch.allclose(z_q, z_e)
    upstream = torch.randn_like(z_q)
    (z_q * upstream).sum().backward()
    torch.testing.assert_close(z_e.grad, upstream)  # d z_q / d z_e = I


def test_encoder_gets_gradients_through_the_quantiser():
    model = VQVAE(VQVAEConfig(**TINY))
    x = torch.rand(4, 1, 28, 28)
    # the reconstruction term alone reaches the encoder only through the straight-through path
    out, _, _ = model(x)
    F.binary_cross_entropy_with_logits(out, x).backward()
    for name, p in model.encoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    model.zero_grad()
    model.loss(x)[0].backward()
    for name, p in model.encoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_codebook_and_commitment_losses_match_hand_formulas_and_route_gradients():
    vq = VectorQuantizer(6, 3, ema=False).eval()
    with torch.no_grad():
        vq.codebook.normal_()
    z_e = torch.randn(2, 3, 4, 4, requires_grad=True)
    _, codes, losses = vq(z_e)
    e = vq.codebook.detach()[codes].permute(0, 3, 1, 2)  # (B, D, H, W) assigned codes
    expected = ((z_e.detach() - e) ** 2).mean()
    torch.testing.assert_close(losses["codebook"], expected)
    torch.testing.assert_close(losses["commitment"], expected)

    g_z, g_e = torch.autograd.grad(
        losses["codebook"], [z_e, vq.codebook], retain_graph=True, allow_unused=True
    )
    assert g_z is None  # the codebook loss moves only the codes ...
    flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, 3)
    diff = vq.codebook.detach()[codes.reshape(-1)] - flat  # (M, D): e_k - z
    hand = torch.zeros(6, 3).index_add_(0, codes.reshape(-1), diff) * 2 / z_e.numel()
    torch.testing.assert_close(g_e, hand)

    g_z, g_e = torch.autograd.grad(losses["commitment"], [z_e, vq.codebook], allow_unused=True)
    assert g_e is None  # ... and the commitment loss only the encoder output
    torch.testing.assert_close(g_z, 2 * (z_e.detach() - e) / z_e.numel())


def test_ema_quantizer_has_zero_codebook_loss_and_no_codebook_parameter():
    vq = VectorQuantizer(6, 3, ema=True)
    _, _, losses = vq(torch.randn(2, 3, 4, 4, requires_grad=True))
    assert float(losses["codebook"]) == 0.0 and not losses["codebook"].requires_grad
    assert list(vq.parameters()) == []


def test_ema_update_moves_used_codes_toward_the_mean_of_their_vectors():
    d = 0.9
    vq = VectorQuantizer(3, 2, ema=True, ema_decay=d, restart_dead=False)
    old = [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]
    _set_codebook(vq, old)
    vectors = torch.tensor([[1.0, 2.0], [3.0, 0.0], [9.0, 1.0], [8.0, -1.0]])  # codes 0, 0, 1, 1
    z_e = _grid_of(vectors, 2, 2)
    _, codes, _ = vq.train()(z_e)
    assert codes.reshape(-1).tolist() == [0, 0, 1, 1]

    # one EMA step by hand: N = d N + (1-d) n, m = d m + (1-d) s, e = m / Laplace(N)
    e0 = torch.tensor(old)
    n = torch.tensor([2.0, 2.0, 0.0])
    s = torch.tensor([[4.0, 2.0], [17.0, 0.0], [0.0, 0.0]])
    count = d * 1.0 + (1 - d) * n
    total = count.sum()
    smoothed = (count + vq.eps) / (total + 3 * vq.eps) * total
    expected = (d * e0 + (1 - d) * s) / smoothed[:, None]
    torch.testing.assert_close(vq.codebook, expected)
    torch.testing.assert_close(vq.ema_count, count)

    means = torch.tensor([[2.0, 1.0], [8.5, 0.0]])
    assert ((vq.codebook[:2] - means).norm(dim=1) < (e0[:2] - means).norm(dim=1)).all()

    frozen = {k: v.clone() for k, v in vq.state_dict().items()}
    vq.eval()(z_e)
    for k, v in vq.state_dict().items():
        assert torch.equal(v, frozen[k]), f"{k} changed in eval mode"


@pytest.mark.parametrize("ema", [False, True])
def test_dead_codes_are_restarted_to_batch_vectors_after_dead_after_steps(ema):
    vq = VectorQuantizer(4, 2, ema=ema, dead_after=5).train()
    _set_codebook(vq, [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [100.0, 100.0]])
    centres = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    vectors = centres.repeat(4, 1) + 0.05 * torch.randn(12, 2)
    z_e = _grid_of(vectors, 3, 4)
    for step in range(1, 5):
        vq(z_e)
        assert int(vq.steps_unused[3]) == step and vq.codebook[3].min() > 50
    assert vq.steps_unused[:3].tolist() == [0, 0, 0]
    vq(z_e)  # the 5th step without a use: code 3 is dead
    distance_to_batch = (vectors - vq.codebook[3]).norm(dim=1).min()
    assert distance_to_batch < 1e-6
    assert int(vq.steps_unused[3]) == 0
    if ema:
        torch.testing.assert_close(vq.ema_sum[3], vq.codebook[3])
        assert float(vq.ema_count[3]) == 1.0
    else:  # no optimiser ran, so the live codes are untouched
        torch.testing.assert_close(vq.codebook[:3], centres)


def test_dead_codes_stay_when_restarts_are_off():
    vq = VectorQuantizer(4, 2, ema=False, restart_dead=False, dead_after=2).train()
    _set_codebook(vq, [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [100.0, 100.0]])
    z_e = _grid_of(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.1, 0.1]]), 2, 2)
    for _ in range(6):
        vq(z_e)
    torch.testing.assert_close(vq.codebook[3], torch.tensor([100.0, 100.0]))
    assert int(vq.steps_unused[3]) == 6


def test_perplexity_counts_the_effective_number_of_codes():
    k = 16
    vq = VectorQuantizer(k, 2)
    uniform = torch.arange(k).repeat(5).view(5, 4, 4)
    assert vq.perplexity(uniform) == pytest.approx(k, rel=1e-5)
    assert vq.usage(uniform) == 1.0
    single = torch.full((3, 4, 4), 7)
    assert vq.perplexity(single) == pytest.approx(1.0)
    assert vq.usage(single) == pytest.approx(1 / k)
    half = torch.tensor([2, 5] * 8)
    assert float(code_perplexity(half, k)) == pytest.approx(2.0, rel=1e-5)


# ----------------------------------------------------------------------------------------------
# the autoencoder


@pytest.mark.parametrize("likelihood", ["bernoulli", "mse"])
def test_28x28_images_give_7x7_codes_and_decode_back_to_images_in_unit_range(likelihood):
    model = VQVAE(VQVAEConfig(likelihood=likelihood)).eval()
    x = torch.rand(3, 1, 28, 28)
    codes = model.encode(x)
    assert codes.shape == (3, 7, 7) and codes.dtype == torch.int64
    assert codes.min() >= 0 and codes.max() < 64
    out, fwd_codes, _ = model(x)
    assert out.shape == (3, 1, 28, 28) and torch.equal(fwd_codes, codes)
    images = model.decode_codes(codes)
    assert images.shape == (3, 1, 28, 28)
    assert images.min() >= 0 and images.max() <= 1
    torch.testing.assert_close(model.reconstruct(x), images)
    assert torch.equal(encode_dataset(model, x, batch_size=2), codes)


def test_loss_is_recon_plus_codebook_plus_beta_commitment_per_image():
    cfg = VQVAEConfig(**TINY, ema=False, beta=0.5)
    model = VQVAE(cfg).eval()
    x = torch.rand(5, 1, 28, 28)
    total, logs = model.loss((x, torch.zeros(5, dtype=torch.long)))
    assert set(logs) == {"recon", "codebook", "commitment", "perplexity"}
    torch.testing.assert_close(total, logs["recon"] + logs["codebook"] + 0.5 * logs["commitment"])
    out, codes, vq = model(x)
    bce = F.binary_cross_entropy_with_logits(out, x, reduction="sum") / 5
    torch.testing.assert_close(logs["recon"], bce)
    torch.testing.assert_close(logs["commitment"], vq["commitment"] * 8 * 7 * 7)
    torch.testing.assert_close(logs["perplexity"], code_perplexity(codes, 32))


def test_encoding_does_not_touch_the_codebook_even_in_training_mode():
    model = VQVAE(VQVAEConfig(**TINY)).train()
    before = {k: v.clone() for k, v in model.quantizer.state_dict().items()}
    x = torch.rand(4, 1, 28, 28)
    model.encode(x)
    model.reconstruct(x)
    for k, v in model.quantizer.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_codes_and_sequences_round_trip_in_raster_order():
    codes = torch.randint(64, (2, 7, 7))
    seq = codes_to_sequence(codes)
    assert seq.shape == (2, 49)
    assert seq[1, 7 * 3 + 5] == codes[1, 3, 5]
    assert torch.equal(sequence_to_codes(seq, 7, 7), codes)
    with pytest.raises(ValueError, match=r"\(B, 49\)"):
        sequence_to_codes(seq[:, :48], 7, 7)


def test_wrong_image_shape_is_rejected_naming_the_expected_shape():
    model = VQVAE(VQVAEConfig(**TINY))
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\).*\(2, 1, 32, 32\)"):
        model.loss(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        model.encode(torch.rand(1, 28, 28))


def test_pixels_outside_unit_range_are_rejected_by_a_bernoulli_model_only():
    x = torch.rand(2, 1, 28, 28) * 255
    with pytest.raises(ValueError, match=r"pixels in \[0, 1\].*255|pixels in \[0, 1\]"):
        VQVAE(VQVAEConfig(**TINY)).loss(x)
    total, _ = VQVAE(VQVAEConfig(**TINY, likelihood="mse")).loss(x)
    assert torch.isfinite(total)


def test_decode_codes_rejects_ids_out_of_range_and_wrong_grids():
    model = VQVAE(VQVAEConfig(**TINY))
    with pytest.raises(ValueError, match=r"\[0, 32\).*\[32, 32\]"):
        model.decode_codes(torch.full((1, 7, 7), 32))
    with pytest.raises(ValueError, match=r"\[0, 32\).*\[-1, 0\]"):
        model.decode_codes(torch.cat([torch.zeros(1, 7, 6), -torch.ones(1, 7, 1)], 2).long())
    with pytest.raises(ValueError, match=r"\(B, 7, 7\)"):
        model.decode_codes(torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        model.decode_codes(torch.zeros(1, 7, 7))


def test_bad_configs_are_rejected_with_the_reason():
    with pytest.raises(ValueError, match="divisible by 4"):
        VQVAEConfig(image_size=30)
    with pytest.raises(ValueError, match="'bernoulli', 'mse'"):
        VQVAEConfig(likelihood="gaussian")
    with pytest.raises(ValueError, match="ema_decay"):
        VQVAEConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match="divisible by n_head"):
        CodePriorConfig(n_embd=30, n_head=4)


def test_vqvae_and_prior_rebuild_from_a_shipped_style_checkpoint(tmp_path):
    model = VQVAE(VQVAEConfig(**TINY))
    model.train()(torch.rand(2, 1, 28, 28))  # make the usage buffers non-trivial
    prior = CodePrior(CodePriorConfig(num_codes=32, n_layer=1, n_head=2, n_embd=16))
    for name, m in (("vq", model), ("prior", prior)):
        save_pretrained(m, name, tmp_path, command="test", metrics={})
        loaded = load_pretrained(name, folder=tmp_path)
        assert loaded.config == m.config
        for k, v in m.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v), k


def test_short_training_on_mnist_lowers_reconstruction_and_uses_many_codes():
    x, _ = load_mnist("train")
    x = x[:400]
    model = VQVAE(VQVAEConfig(**TINY, dead_after=20))
    cfg = TrainConfig(steps=150, batch_size=32, lr=2e-3, progress=False, device="cpu", log_every=10)
    history = Trainer(model, x, cfg).fit()
    _, recon = history.series("recon")
    assert recon[-1] < 0.6 * recon[0], recon
    codes = encode_dataset(model.eval(), x)
    assert model.quantizer.usage(codes) > 0.1
    assert model.quantizer.perplexity(codes) > 3


# ----------------------------------------------------------------------------------------------
# the prior over code grids


def _row_constant_grids(n: int, k: int, grid: int, seed: int = 0) -> torch.Tensor:
    """(n, grid, grid) grids whose every row repeats one random code."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(k, (n, grid, 1), generator=g)
    return rows.expand(n, grid, grid).contiguous()


def test_prior_loss_is_log_k_at_initialisation():
    prior = CodePrior(CodePriorConfig(num_codes=64, grid=7, n_layer=2, n_head=2, n_embd=32))
    with torch.no_grad():
        loss = prior.eval().loss((torch.randint(64, (8, 7, 7)),))
    assert torch.isfinite(loss)
    assert float(loss) == pytest.approx(math.log(64), abs=0.05)


def test_prior_learns_row_constant_grids_and_samples_them():
    k, grid = 8, 4
    data = _row_constant_grids(512, k, grid)
    cfg = CodePriorConfig(num_codes=k, grid=grid, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
    prior = CodePrior(cfg)
    with torch.no_grad():
        before = float(prior.eval().loss(data))
    train = TrainConfig(steps=150, batch_size=32, lr=3e-3, progress=False, device="cpu")
    Trainer(prior, data, train).fit()
    with torch.no_grad():
        after = float(prior.eval().loss(data))
    # only the first code of each row is uncertain: the best loss is log(k) / grid ~ 0.52
    assert after < 0.5 * before and after < 0.4 * math.log(k), (before, after)
    # a context-free prior cannot use the row's first code: it stays near log(k)
    assert after < 0.5 * unigram_code_nll(data, data, k), after

    samples = prior.sample(64, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (64, grid, grid) and samples.dtype == torch.int64
    assert samples.min() >= 0 and samples.max() < k
    constant_rows = (samples == samples[:, :, :1]).all(-1).float().mean()
    assert constant_rows > 0.9, constant_rows
    assert len(samples[:, :, 0].unique()) > k // 2  # varied, not one memorised grid


def test_prior_samples_never_use_the_start_token_and_respect_top_k():
    prior = CodePrior(CodePriorConfig(num_codes=5, grid=3, n_layer=1, n_head=2, n_embd=16))
    g = torch.Generator().manual_seed(1)
    samples = prior.sample(200, temperature=2.0, generator=g)  # flat, untrained: all ids likely
    assert samples.shape == (200, 3, 3)
    assert samples.min() >= 0 and samples.max() < 5
    greedy_a = prior.sample(3, top_k=1, generator=torch.Generator().manual_seed(2))
    greedy_b = prior.sample(3, top_k=1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(greedy_a, greedy_b)  # top_k=1 leaves one choice per step
    assert prior.sample(0).shape == (0, 3, 3)


def test_prior_loss_rejects_grids_of_the_wrong_size_or_range():
    prior = CodePrior(CodePriorConfig(num_codes=8, grid=4, n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(ValueError, match=r"\(B, 4, 4\)"):
        prior.loss(torch.zeros(2, 7, 7, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        prior.loss(torch.full((2, 4, 4), 8))


# ----------------------------------------------------------------------------------------------
# the context-free baseline of the prior


def test_unigram_nll_on_its_own_codes_is_the_log_perplexity():
    codes = torch.randint(0, 16, (50, 7, 7)) % 11  # uneven use of 11 of 16 codes
    nll = unigram_code_nll(codes, codes, 16, smoothing=0.0)
    assert nll == pytest.approx(math.log(code_perplexity(codes, 16).item()), rel=1e-5)


def test_unigram_nll_of_a_uniform_histogram_is_log_k_and_smoothing_keeps_unseen_codes_finite():
    uniform = torch.arange(64).repeat(10)
    assert unigram_code_nll(uniform, uniform, 64) == pytest.approx(math.log(64))
    seen, unseen = torch.zeros(100, dtype=torch.long), torch.ones(5, dtype=torch.long)
    # code 1 never occurs in training: add-one smoothing gives it 1 / (100 + 4) of the mass
    assert unigram_code_nll(seen, unseen, 4) == pytest.approx(math.log(104))


def test_unigram_nll_rejects_float_codes_codes_out_of_range_and_negative_smoothing():
    ok = torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match="integer"):
        unigram_code_nll(ok.float(), ok, 4)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        unigram_code_nll(ok, ok + 4, 4)
    with pytest.raises(ValueError, match="smoothing"):
        unigram_code_nll(ok, ok, 4, smoothing=-1.0)


def test_position_nll_matches_a_hand_count_and_sees_position_the_unigram_misses():
    # position 0 always holds code 0, position 1 always code 1: the global histogram is 50/50
    grids = torch.tensor([[0, 1]] * 6)
    assert unigram_code_nll(grids, grids, 2, smoothing=0.0) == pytest.approx(math.log(2))
    assert position_code_nll(grids, grids, 2, smoothing=0.0) == pytest.approx(0.0, abs=1e-12)
    # add-one: at each position the seen code has (6 + 1) / (6 + 2), the unseen one 1 / 8
    assert position_code_nll(grids, grids, 2) == pytest.approx(-math.log(7 / 8))
    assert position_code_nll(grids, grids.flip(1), 2) == pytest.approx(math.log(8))


def test_position_nll_is_at_most_the_unigram_on_its_own_codes_and_equals_it_without_position():
    codes = torch.randint(0, 16, (200, 3, 3)) % 11
    codes[:, 0, 0] = 3  # one position with its own histogram
    assert position_code_nll(codes, codes, 16, 0.0) < unigram_code_nll(codes, codes, 16, 0.0)
    same = torch.randint(0, 8, (300, 1)).repeat(1, 4)  # every position the same histogram
    assert position_code_nll(same, same, 8, 0.0) == pytest.approx(
        unigram_code_nll(same, same, 8, 0.0)
    )


def test_position_nll_rejects_bad_grids_and_smoothing():
    ok = torch.zeros(3, 2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="integer"):
        position_code_nll(ok.float(), ok, 4)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        position_code_nll(ok, ok + 4, 4)
    with pytest.raises(ValueError, match="same grid"):
        position_code_nll(ok, ok.reshape(3, 4), 4)
    with pytest.raises(ValueError, match="smoothing"):
        position_code_nll(ok, ok, 4, smoothing=-1.0)
