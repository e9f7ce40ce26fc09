"""The GPT: causality, the KV cache, attention, decoding rules, masked modelling."""

import pytest
import torch
import torch.nn.functional as F

from genai_course.data import CharTokenizer, TokenWindows
from genai_course.models.gpt import (
    GPT,
    GPTConfig,
    MaskedLMObjective,
    SelfAttention,
    attention,
    mask_tokens,
    masked_lm_loss,
    sample_next,
)
from genai_course.train import TrainConfig, Trainer


def _gpt(**kw):
    torch.manual_seed(0)
    base = dict(vocab_size=11, block_size=32, n_layer=2, n_head=2, n_embd=16, dropout=0.0)
    base.update(kw)
    return GPT(GPTConfig(**base)).eval()


def test_changing_a_future_token_never_changes_past_logits():
    model = _gpt()
    x = torch.randint(11, (2, 20))
    y = x.clone()
    y[:, 12] = (y[:, 12] + 1) % 11
    a, _ = model(x)
    b, _ = model(y)
    torch.testing.assert_close(a[:, :12], b[:, :12])
    assert not torch.allclose(a[:, 12:], b[:, 12:])


def test_bidirectional_model_sees_the_future():
    model = _gpt(causal=False)
    x = torch.randint(11, (1, 10))
    y = x.clone()
    y[0, 9] = (y[0, 9] + 1) % 11
    assert not torch.allclose(model(x)[0][:, :9], model(y)[0][:, :9])


def test_kv_cache_gives_the_logits_of_full_recomputation():
    model = _gpt()
    x = torch.randint(11, (3, 16))
    full, _ = model(x)
    logits, cache = model(x[:, :5])
    steps = [logits]
    for t in range(5, 16):  # one token at a time
        logits, cache = model(x[:, t : t + 1], cache)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    # several new tokens at once against a cache need the offset causal mask
    logits, cache = model(x[:, :7])
    more, _ = model(x[:, 7:12], cache)
    torch.testing.assert_close(more, full[:, 7:12], atol=1e-5, rtol=1e-5)


def test_greedy_generation_is_identical_with_and_without_the_cache():
    model = _gpt()
    prompt = torch.randint(11, (2, 4))
    a = model.generate(prompt, max_new=40, greedy=True, use_cache=True)  # runs past block_size = 32
    b = model.generate(prompt, max_new=40, greedy=True, use_cache=False)
    assert a.shape == (2, 44)
    assert torch.equal(a, b)


def test_attention_written_out_equals_the_fused_kernel():
    q, k, v = (torch.randn(2, 3, 7, 8) for _ in range(3))
    for causal in (True, False):
        torch.testing.assert_close(
            attention(q, k, v, causal), F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        )
    # the last 2 queries against 7 keys (decoding with a cache)
    mask = torch.ones(2, 7, dtype=torch.bool).tril(diagonal=5)
    torch.testing.assert_close(
        attention(q[:, :, -2:], k, v, True),
        F.scaled_dot_product_attention(q[:, :, -2:], k, v, attn_mask=mask),
    )


def test_top_k_and_top_p_keep_only_the_allowed_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.15, 0.1]])).repeat(2000, 1)
    g = torch.Generator().manual_seed(0)
    k2 = sample_next(logits, top_k=2, generator=g)
    assert set(k2.flatten().tolist()) == {0, 1}
    p = sample_next(logits, top_p=0.8, generator=g)  # 0.5 + 0.25 < 0.8: three tokens needed
    assert set(p.flatten().tolist()) == {0, 1, 2}
    counts = torch.bincount(p.flatten(), minlength=4).float() / len(p)
    torch.testing.assert_close(counts[:3], torch.tensor([0.5, 0.25, 0.15]) / 0.9, atol=0.04, rtol=0)
    assert torch.equal(sample_next(logits[:3], greedy=True), torch.zeros(3, 1, dtype=torch.long))
    cold = sample_next(logits, temperature=0.05, generator=g)
    assert (cold == 0).float().mean() > 0.99


def test_top_p_of_one_keeps_every_token(monkeypatch):
    # the tail's probability 2e-9 is lost in float32's 1 + 2e-9, so the cumulative sum of the
    # sorted probabilities reaches 1.0 at the first token already
    logits = torch.tensor([[0.0, -20.0, -20.0], [0.0, 1.0, 2.0]])
    seen = []
    multinomial = torch.multinomial
    monkeypatch.setattr(
        torch,
        "multinomial",
        lambda probs, *a, **kw: seen.append(probs) or multinomial(probs, *a, **kw),
    )
    sample_next(logits, top_p=1.0)
    sample_next(logits)
    assert (seen[0] > 0).all()  # nothing filtered: the same distribution as without top_p
    torch.testing.assert_close(seen[0], seen[1])


def test_generation_rejects_bad_input_with_clear_errors():
    model = _gpt()
    with pytest.raises(ValueError, match="longer than the block size 32"):
        model(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match="int64"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        model.generate(torch.zeros(1, 2, dtype=torch.long), max_new=3, temperature=0)
    tok = CharTokenizer("abcdefghij ")
    named = _gpt(vocab=tok.vocab)
    assert (
        len(named.generate_text("abc", max_new=5, generator=torch.Generator().manual_seed(0))) == 8
    )
    with pytest.raises(ValueError, match="'Z'"):
        named.generate_text("aZ", max_new=5)


def test_generate_names_a_bad_prompt_and_restores_train_mode():
    model = _gpt().train()
    vocab = model.config.vocab_size
    with pytest.raises(
        ValueError, match=rf"prompt id {vocab} is outside the vocabulary \[0, {vocab}\)"
    ):
        model.generate(torch.tensor([[1, vocab]]), max_new=2)
    with pytest.raises(ValueError, match=r"prompt id -1 is outside"):
        model.generate(torch.tensor([[-1]]), max_new=2)
    with pytest.raises(ValueError, match=r"integer tensor of shape \(B, T\)"):
        model.generate(torch.tensor([1, 2]), max_new=2)
    with pytest.raises(ValueError, match="at least one token"):
        model.generate(torch.zeros(1, 0, dtype=torch.long), max_new=2)
    with pytest.raises(ValueError, match="max_new must be an int >= 0"):
        model.generate(torch.zeros(1, 1, dtype=torch.long), max_new=-1)
    with pytest.raises(TypeError):
        model.generate(torch.zeros(1, 1, dtype=torch.long), 3)  # max_new is keyword-only
    assert model.training  # a failing call leaves the mode as it was


def test_masked_loss_counts_only_masked_positions():
    model = _gpt(vocab_size=12, causal=False)  # id 11 is [MASK]
    tokens = torch.randint(11, (4, 30))
    g = torch.Generator().manual_seed(0)
    inputs, targets = mask_tokens(tokens, 11, 11, mask_prob=0.3, generator=g)
    chosen = targets != -100
    assert torch.equal(targets[chosen], tokens[chosen])
    assert torch.equal(inputs[~chosen], tokens[~chosen])
    logits, _ = model(inputs)
    by_hand = F.cross_entropy(logits[chosen], tokens[chosen])
    torch.testing.assert_close(masked_lm_loss(model, inputs, targets), by_hand)
    with pytest.raises(ValueError, match="bidirectional"):
        masked_lm_loss(_gpt(), inputs.clamp(max=10), targets)


def test_mask_tokens_follows_the_80_10_10_rule():
    tokens = torch.randint(100, (200, 500))
    inputs, targets = mask_tokens(
        tokens, 100, 100, mask_prob=0.15, generator=torch.Generator().manual_seed(0)
    )
    chosen = targets != -100
    assert chosen.float().mean().item() == pytest.approx(0.15, abs=0.005)
    masked = (inputs[chosen] == 100).float().mean().item()
    kept = (inputs[chosen] == tokens[chosen]).float().mean().item()
    assert masked == pytest.approx(0.8, abs=0.01)
    assert kept == pytest.approx(0.1 + 0.1 / 100, abs=0.01)  # kept, or replaced by itself


def test_token_windows_shift_targets_and_resume_exactly():
    tokens = torch.arange(1000)
    w = TokenWindows(tokens, block_size=16, batch_size=4, seed=3)
    x, y = w.next_batch()
    assert x.shape == y.shape == (4, 16) and torch.equal(y, x + 1)
    later = [w.next_batch()[0] for _ in range(3)]
    w2 = TokenWindows(tokens, block_size=16, batch_size=4, seed=3)
    w2.load_state_dict({"index": 1, "seed": 3})
    for expected in later:
        assert torch.equal(w2.next_batch()[0], expected)
    # two shards hold the halves of the one-process global batch
    whole = TokenWindows(tokens, block_size=16, batch_size=8, seed=5).next_batch()[0]
    parts = [
        TokenWindows(tokens, block_size=16, batch_size=4, seed=5).shard(r, 2).next_batch()[0]
        for r in range(2)
    ]
    assert sorted(map(tuple, whole.tolist())) == sorted(map(tuple, torch.cat(parts).tolist()))
    with pytest.raises(ValueError, match="1-D int64"):
        TokenWindows(torch.zeros(100), block_size=4, batch_size=2)


def test_gpt_learns_a_repeating_text_with_the_trainer():
    tok = CharTokenizer.from_text("abcdefgh ")
    tokens = tok.encode("abcdefgh " * 200)
    model = _gpt(vocab_size=len(tok), vocab=tok.vocab).train()
    train = TokenWindows(tokens, block_size=16, batch_size=16)
    val = TokenWindows(tokens[:400], block_size=16, batch_size=16)
    t = Trainer(model, train, TrainConfig(steps=150, lr=3e-3, progress=False), val_data=val)
    before = t.evaluate()["val_loss"]
    t.fit()
    assert t.history.last("val_loss") < 0.1 < before
    assert model.generate_text("abc", max_new=12, greedy=True) == "abcdefgh abcdef"


def test_masked_lm_objective_trains_a_bidirectional_model_with_the_trainer():
    text = "abcdefghij" * 40
    tok = CharTokenizer("abcdefghij")
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(
            vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=32, causal=False, dropout=0.0
        )
    )
    windows = TokenWindows(tok.encode(text), block_size=16, batch_size=16)
    objective = MaskedLMObjective(mask_id=10, mask_prob=0.3)
    trainer = Trainer(
        model,
        windows,
        TrainConfig(steps=300, lr=1e-2, log_every=10, progress=False),
        loss_fn=objective,
    )
    trainer.fit()
    _, losses = trainer.history.series("train_loss")
    # a masked letter of the periodic text is fully determined by its neighbours
    assert sum(losses[-5:]) / 5 < 0.2 * losses[0]
    with pytest.raises(ValueError, match="last id 10"):
        MaskedLMObjective(mask_id=9)(model, windows.next_batch())
    with pytest.raises(ValueError, match="mask_prob"):
        MaskedLMObjective(mask_id=10, mask_prob=1.5)


# classification head


def _classifier(pool="last"):
    from genai_course.models.gpt import GPTClassifier

    return GPTClassifier(_gpt(), 3, pool=pool).eval()


@pytest.mark.parametrize("pool", ["last", "mean"])
def test_classifier_ignores_padding(pool):
    from genai_course.models.gpt import pad_sequences

    clf = _classifier(pool)
    seqs = [torch.randint(1, 11, (n,)) for n in (3, 7, 5)]
    ids, lengths = pad_sequences(seqs, pad_id=0)
    batched = clf(ids, lengths)
    alone = torch.cat([clf(s[None], torch.tensor([len(s)])) for s in seqs])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)
    other = ids.clone()
    other[ids == 0] = 4  # different padding, same sequences
    torch.testing.assert_close(clf(other, lengths), batched, atol=1e-5, rtol=1e-5)


def test_classifier_last_pool_reads_the_last_real_token():
    clf = _classifier("last")
    ids = torch.randint(1, 11, (2, 6))
    h, _ = clf.gpt(ids, return_hidden=True)
    expected = clf.classifier(h[[0, 1], [3, 5]])
    torch.testing.assert_close(clf(ids, torch.tensor([4, 6])), expected)


def test_classifier_learns_a_label_through_the_trainer():
    from genai_course.models.gpt import GPTClassifier

    torch.manual_seed(0)
    ids = torch.randint(1, 11, (256, 8))
    labels = (ids == 3).any(1).long()  # does the sequence contain token 3?
    lengths = torch.full((256,), 8)
    clf = GPTClassifier(_gpt(), 2)
    cfg = TrainConfig(steps=150, batch_size=64, lr=3e-3, progress=False, device="cpu")
    Trainer(clf, (ids, lengths, labels), cfg).fit()
    with torch.no_grad():
        acc = (clf.eval()(ids, lengths).argmax(-1) == labels).float().mean()
    assert acc > 0.9


def test_classifier_rejects_bad_lengths_labels_and_pool():
    from genai_course.models.gpt import GPTClassifier, pad_sequences

    clf = _classifier()
    ids = torch.randint(1, 11, (2, 5))
    with pytest.raises(ValueError, match="lengths must be in"):
        clf(ids, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="lengths must have shape"):
        clf(ids, torch.tensor([5]))
    with pytest.raises(ValueError, match="labels must be int64"):
        clf.loss((ids, torch.tensor([5, 5]), torch.tensor([0.0, 1.0])))
    with pytest.raises(ValueError, match="pool must be one of"):
        GPTClassifier(_gpt(), 3, pool="max")
    with pytest.raises(ValueError, match="needs a causal GPT"):
        GPTClassifier(_gpt(causal=False), 3)
    with pytest.raises(ValueError, match="empty"):
        pad_sequences([torch.tensor([1]), torch.tensor([], dtype=torch.long)])


def test_set_dropout_reaches_every_dropout_including_attention():
    model = GPT(GPTConfig(vocab_size=11, n_layer=2, n_head=2, n_embd=16, block_size=8, dropout=0.1))
    assert model.set_dropout(0.0) is model and model.config.dropout == 0.0
    rates = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    rates += [m.dropout for m in model.modules() if isinstance(m, SelfAttention)]
    assert len(rates) > 2 * 2 and set(rates) == {0.0}
    x = torch.randint(0, 11, (2, 8))
    model.train()
    torch.testing.assert_close(model(x)[0], model(x)[0])  # no randomness left in training mode
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        model.set_dropout(1.0)


# the shipped language models


def _held_out_bpc(name: str, text: str) -> float:
    """Bits per character of shipped GPT ``name`` predicting characters 1..512 of ``text``."""
    import math

    from genai_course.pretrained import load_pretrained

    gpt = load_pretrained(name).eval()
    ids = gpt.tokenizer.encode(text[:513])[None]
    with torch.no_grad():
        nats = F.cross_entropy(gpt(ids[:, :-1])[0][0], ids[0, 1:])
    return float(nats) / math.log(2)


def test_shipped_gpts_predict_held_out_text_far_better_than_chance():
    # chance is log2(103) = 6.7 bits per character, what an untrained GPT scores; the manifests
    # record about 1.4 over the whole test splits
    from genai_course import music
    from genai_course.data import load_python_docs, python_docs_tokenizer

    assert _held_out_bpc("gpt-pydocs", load_python_docs("test")) < 3.0
    tunes = music.tunes_corpus(music.load_tunes("test"), python_docs_tokenizer().vocab)
    # fine-tuning taught gpt-folk the tunes, which the Python reference model finds alien
    folk, pydocs = _held_out_bpc("gpt-folk", tunes), _held_out_bpc("gpt-pydocs", tunes)
    assert folk < 2.0 and folk < pydocs - 3.0
