"""The character RNNs of chapter 08: teacher forcing, padding, sampling, conditioning."""

import math

import pytest
import torch
import torch.nn.functional as F

from genai_course.data import CharTokenizer
from genai_course.models.rnn import BOUNDARY, IGNORE, CharRNN, CharRNNConfig, names_to_batch
from genai_course.train import TensorLoader, TrainConfig, Trainer

VOCAB = "abcdeilnorst"
NAMES = ["anna", "otto", "bob", "alice", "ted", "lena", "carlos", "di"]
CELLS = ["rnn", "lstm", "gru"]


def _rnn(cell="gru", **kw):
    torch.manual_seed(0)
    base = dict(vocab=VOCAB, cell=cell, n_embd=8, hidden=16)
    base.update(kw)
    return CharRNN(CharRNNConfig(**base))


def test_names_are_framed_by_the_boundary_token_and_padded():
    x, y = names_to_batch(["ab", "c"], CharTokenizer("abc"))
    b = BOUNDARY
    assert x.tolist() == [[b, 1, 2], [b, 3, b]]  # character ids are shifted by one
    assert y.tolist() == [[1, 2, b], [3, b, IGNORE]]  # the next token, then the end token
    assert torch.equal(x[:, 1:][y[:, :-1] != IGNORE], y[:, :-1][y[:, :-1] != IGNORE])


def test_an_unknown_character_names_the_name_and_the_character():
    with pytest.raises(ValueError, match=r"name 1 \('Zoe'\).*'Z'"):
        _rnn().encode_names(["anna", "Zoe"])
    with pytest.raises(ValueError, match="at least one name"):
        names_to_batch([], CharTokenizer("ab"))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_conditions", [0, 3])
def test_teacher_forced_loss_equals_stepping_the_recurrence_one_char_at_a_time(
    cell, num_conditions
):
    model = _rnn(cell, num_conditions=num_conditions).eval()
    cond = [0, 2, 1, 1, 0, 2, 1, 0][: len(NAMES)] if num_conditions else None
    batch = model.encode_names(NAMES, cond)
    total, tokens = 0.0, 0
    for i, name in enumerate(NAMES):
        c = None if cond is None else cond[i]
        ids = [BOUNDARY] + [VOCAB.index(ch) + 1 for ch in name] + [BOUNDARY]
        state = None
        for prev, nxt in zip(ids[:-1], ids[1:]):  # feed one character, carry the state
            logits, state = model(torch.tensor([[prev]]), c, state)
            total -= logits[0, -1].log_softmax(-1)[nxt].item()
            tokens += 1
    torch.testing.assert_close(model.loss(batch).item(), total / tokens, atol=1e-5, rtol=1e-5)


def test_the_gru_resets_after_the_matrix_product_as_documented():
    # the module docstring's GRU: h~ = tanh(W e + b + r * (U h + c)), h' = z * h + (1 - z) * h~
    model = _rnn("gru").eval()
    gru = model.rnn
    e, h = torch.randn(5, 8), torch.randn(5, 16)
    W_r, W_z, W_n = gru.weight_ih_l0.chunk(3)  # PyTorch's gate order: reset, update, new
    U_r, U_z, U_n = gru.weight_hh_l0.chunk(3)
    b_r, b_z, b_n = gru.bias_ih_l0.chunk(3)
    c_r, c_z, c_n = gru.bias_hh_l0.chunk(3)
    r = torch.sigmoid(e @ W_r.T + b_r + h @ U_r.T + c_r)
    z = torch.sigmoid(e @ W_z.T + b_z + h @ U_z.T + c_z)
    after = torch.tanh(e @ W_n.T + b_n + r * (h @ U_n.T + c_n))
    before = torch.tanh(e @ W_n.T + b_n + (r * h) @ U_n.T + c_n)  # Cho et al.'s placement
    with torch.no_grad():
        _, out = gru(e[:, None], h[None])  # one step from state h
    torch.testing.assert_close(out[0], z * h + (1 - z) * after)
    assert (out[0] - (z * h + (1 - z) * before)).abs().max() > 1e-3  # a different function


def test_padding_changes_neither_the_loss_nor_the_log_likelihood():
    model = _rnn("lstm").eval()
    x, y = model.encode_names(NAMES)
    scrambled = x.clone()
    pad = y == IGNORE
    scrambled[pad] = torch.randint(1, len(VOCAB) + 1, (int(pad.sum()),))  # junk after the end
    assert pad.any()
    torch.testing.assert_close(model.loss((scrambled, y)), model.loss((x, y)))
    alone = torch.cat([model.log_prob([n]) for n in NAMES])  # each in its own unpadded batch
    torch.testing.assert_close(model.log_prob(NAMES), alone, atol=1e-5, rtol=1e-5)


def test_log_prob_is_minus_the_loss_times_the_number_of_tokens():
    model = _rnn("gru", num_conditions=2).eval()
    cond = torch.tensor([0, 1] * 4)
    tokens = sum(len(n) + 1 for n in NAMES)  # characters plus one end token each
    loss = model.loss(model.encode_names(NAMES, cond))
    torch.testing.assert_close(model.log_prob(NAMES, cond).sum(), -loss.detach() * tokens)
    assert model.nats_per_char(NAMES, cond) == pytest.approx(loss.item(), rel=1e-5)


def test_an_untrained_model_is_close_to_uniform_over_the_tokens():
    loss = _rnn("rnn").loss(_rnn("rnn").encode_names(NAMES))
    assert loss.item() == pytest.approx(math.log(len(VOCAB) + 1), rel=0.1)


@pytest.mark.parametrize("cell", CELLS)
def test_each_cell_learns_one_name_per_category_with_the_trainer(cell):
    names = ["anna", "otto", "carlos", "lise"]
    model = _rnn(cell, num_conditions=4, hidden=32)
    batch = model.encode_names(names, torch.arange(4))
    cfg = TrainConfig(steps=150, batch_size=4, lr=1e-2, grad_clip=1.0, progress=False)
    trainer = Trainer(model, TensorLoader(*batch, batch_size=4), cfg, val_data=batch)
    before = trainer.evaluate()["val_loss"]
    trainer.fit()
    assert trainer.history.last("val_loss") < 0.1 * before
    # the category alone now decides the name: greedy decoding recovers each one
    assert [model.sample(1, labels=k, greedy=True)[0] for k in range(4)] == names


def test_samples_respect_max_len_and_the_vocabulary_and_are_reproducible():
    model = _rnn("lstm", max_len=5)
    g = torch.Generator().manual_seed(0)
    names = model.sample(300, generator=g)
    assert len(names) == 300
    assert all(len(n) <= 5 and set(n) <= set(VOCAB) for n in names)
    assert max(len(n) for n in names) == 5  # some hit the cap, untrained models rarely stop
    assert len(set(names)) > 100
    again = model.sample(300, generator=torch.Generator().manual_seed(0))
    assert again == names
    assert model.training, "sample() must restore the training mode"


def test_a_very_low_temperature_samples_the_greedy_name():
    model = _rnn("gru", num_conditions=3)
    for k in range(3):
        greedy = model.sample(1, labels=k, greedy=True)[0]
        cold = model.sample(
            20, labels=k, temperature=1e-4, generator=torch.Generator().manual_seed(k)
        )
        assert cold == [greedy] * 20
    hot = model.sample(20, labels=0, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert len(set(hot)) > 1


def test_the_condition_changes_the_next_character_distribution():
    model = _rnn("lstm", num_conditions=3).eval()
    x, _, _ = model.encode_names(["anna"], 1)
    a, _ = model(x, 0)
    b, _ = model(x, 2)
    assert not torch.allclose(a, b)
    # the same condition given per name or once for all is the same thing
    torch.testing.assert_close(model(x.repeat(2, 1), torch.tensor([2, 2]))[0], b.repeat(2, 1, 1))
    kl = F.kl_div(b.log_softmax(-1), a.log_softmax(-1), log_target=True, reduction="sum")
    assert kl > 0


def test_bad_input_raises_clear_errors():
    with pytest.raises(
        ValueError,
        match="CharRNNConfig.cell must be one of 'rnn', 'lstm', 'gru'; got 'transformer'",
    ):
        CharRNNConfig(vocab=VOCAB, cell="transformer")
    with pytest.raises(ValueError, match="non-empty"):
        CharRNNConfig(vocab="")
    plain, cond = _rnn(), _rnn(num_conditions=3)
    x, y = plain.encode_names(NAMES[:2])
    with pytest.raises(ValueError, match="unconditional"):
        plain(x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="unconditional"):
        plain.sample(2, labels=1)
    with pytest.raises(ValueError, match="conditioned on one of 3 categories"):
        cond.loss((x, y))
    with pytest.raises(ValueError, match=r"must be in \[0, 3\), got values in \[0, 3\]"):
        cond(x, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"must be in \[0, 3\)"):
        cond.sample(2, labels=-1)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        cond(x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="integer ids"):
        cond(x, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="int64"):
        plain(x.float())
    with pytest.raises(ValueError, match="temperature must be > 0"):
        plain.sample(2, temperature=0)
    with pytest.raises(ValueError, match="got 4 items"):
        plain.loss((x, y, x, y))
