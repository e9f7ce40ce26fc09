"""A small GPT, readable in one sitting (chapters 09-11; also the prior of chapter 05).

The model defines a distribution over token sequences by the chain rule,

.. math:: p_\\theta(x_1, \\dots, x_T) = \\prod_{t=1}^T p_\\theta(x_t \\mid x_{<t}),

and is trained by minimising the next-token cross-entropy
:math:`-\\frac1T \\sum_t \\log p_\\theta(x_t \\mid x_{<t})` (nats per token; divide by
:math:`\\ln 2` for bits per character).  Each position attends only to itself and the positions
before it (the causal mask), so one forward pass scores every prefix at once.

The same blocks without the causal mask make a bidirectional encoder trained by masked
modelling (BERT-style, :func:`masked_lm_loss`): chapter 10 compares the two.

Shapes in comments: B batch, T time (sequence length), C channels (``n_embd``), nh heads,
hs head size (``C // nh``), V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Config, check_positive, check_range

KVCache = list[tuple[Tensor, Tensor]]  # per layer: keys and values, each (B, nh, T_past, hs)


@dataclass
class GPTConfig(Config):
    vocab_size: int = 128  # characters of the corpus (+1 for [MASK] when masked modelling)
    block_size: int = 256  # longest context; position embeddings exist up to here
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256  # must be divisible by n_head
    dropout: float = 0.1  # small data overfits; 0 for the longest runs on big corpora
    bias: bool = True
    causal: bool = True  # False: a bidirectional encoder for masked modelling
    vocab: str = ""  # the characters, in id order, so a checkpoint carries its tokenizer

    def validate(self) -> None:
        check_positive(self, "vocab_size", "block_size", "n_layer", "n_head", "n_embd")
        check_range(self, "dropout", 0.0, 1.0)
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.vocab and len(self.vocab) > self.vocab_size:
            raise ValueError(
                f"vocab has {len(self.vocab)} characters but vocab_size is {self.vocab_size}"
            )


# ----------------------------------------------------------------------------------------------
# building blocks


def attention(q: Tensor, k: Tensor, v: Tensor, causal: bool = True) -> Tensor:
    """Scaled dot-product attention written out, the reference for the fused kernel.

    .. math:: \\mathrm{Attention}(Q, K, V) = \\mathrm{softmax}\\left(\\frac{QK^\\top}{\\sqrt{d}}
       + M\\right) V, \\qquad M_{ij} = -\\infty \\text{ if } j > i \\text{ (causal) else } 0.

    q (..., Tq, d), k and v (..., Tk, d) -> (..., Tq, d). With ``causal`` and Tq < Tk the
    queries are the *last* Tq positions (as when decoding with a cache).
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., Tq, Tk)
    if causal:
        tq, tk = q.shape[-2], k.shape[-2]
        allowed = torch.ones(tq, tk, dtype=torch.bool, device=q.device).tril(diagonal=tk - tq)
        scores = scores.masked_fill(~allowed, float("-inf"))
    return scores.softmax(dim=-1) @ v


class SelfAttention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention`` (flash on GPUs)."""

    def __init__(self, c: GPTConfig):
        super().__init__()
        self.n_head, self.causal, self.dropout = c.n_head, c.causal, c.dropout
        self.qkv = nn.Linear(c.n_embd, 3 * c.n_embd, bias=c.bias)
        self.proj = nn.Linear(c.n_embd, c.n_embd, bias=c.bias)
        self.resid_drop = nn.Dropout(c.dropout)

    def forward(
        self, x: Tensor, cache: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # each (B, T, C)
        q, k, v = (
            t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v)
        )  # each (B, nh, T, hs)
        if cache is not None:  # decoding: prepend the keys and values of earlier positions
            k = torch.cat([cache[0], k], dim=2)  # (B, nh, T_past + T, hs)
            v = torch.cat([cache[1], v], dim=2)
        # With a cache the T new queries are the last positions: causal masking of a single
        # query is no masking at all; several new queries need the offset mask.
        if self.causal and cache is not None and T > 1:
            tk = k.shape[2]
            mask = torch.ones(T, tk, dtype=torch.bool, device=x.device).tril(diagonal=tk - T)
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
            )
        else:
            y = F.scaled_dot_product_attention(
                q,
                k,
                v,
                is_causal=self.causal and cache is None,
                dropout_p=self.dropout if self.training else 0.0,
            )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble the heads
        return self.resid_drop(self.proj(y)), (k, v)


class MLP(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(c.n_embd, 4 * c.n_embd, bias=c.bias)
        self.proj = nn.Linear(4 * c.n_embd, c.n_embd, bias=c.bias)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, c: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(c.n_embd, bias=c.bias)
        self.attn = SelfAttention(c)
        self.ln2 = nn.LayerNorm(c.n_embd, bias=c.bias)
        self.mlp = MLP(c)

    def forward(
        self, x: Tensor, cache: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        a, kv = self.attn(self.ln1(x), cache)
        x = x + a
        return x + self.mlp(self.ln2(x)), kv


# ----------------------------------------------------------------------------------------------
# the model


class GPT(nn.Module):
    """Token + position embeddings, ``n_layer`` blocks, a final LayerNorm and a linear head
    whose weight is tied to the token embedding."""

    def __init__(self, config: GPTConfig | None = None):
        super().__init__()
        self.config = c = config or GPTConfig()
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.wpe = nn.Embedding(c.block_size, c.n_embd)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd, bias=c.bias)
        self.head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.head.weight = self.wte.weight  # weight tying: one matrix embeds and un-embeds
        self.apply(self._init)
        for name, p in self.named_parameters():  # residual projections scaled by depth (GPT-2)
            if name.endswith("proj.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * c.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def set_dropout(self, p: float) -> GPT:
        """Set every dropout rate of the network to ``p`` (embeddings, attention weights,
        residual branches) and record it in the config; returns the model (e.g. for a
        fine-tune whose data size calls for another rate than pretraining's)."""
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.config.dropout = p
        for m in self.modules():
            if isinstance(m, nn.Dropout):
                m.p = p
            elif isinstance(m, SelfAttention):
                m.dropout = p
        return self

    def num_params(self, embeddings: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n if embeddings else n - self.wpe.weight.numel()

    @property
    def tokenizer(self):
        """The :class:`~genai_course.data.CharTokenizer` of ``config.vocab``."""
        from ..data import CharTokenizer

        if not self.config.vocab:
            raise ValueError("this model's config has no vocab; build a CharTokenizer yourself")
        return CharTokenizer(self.config.vocab)

    def _check(self, idx: Tensor, past: int = 0) -> None:
        if idx.ndim != 2 or idx.dtype != torch.long:
            raise ValueError(
                f"expected token ids of shape (B, T) and dtype int64, got "
                f"{tuple(idx.shape)} {idx.dtype}"
            )
        if past + idx.shape[1] > self.config.block_size:
            raise ValueError(
                f"sequence of {past + idx.shape[1]} tokens is longer than the "
                f"block size {self.config.block_size}"
            )

    def forward(
        self, idx: Tensor, cache: KVCache | None = None, return_hidden: bool = False
    ) -> tuple[Tensor, KVCache]:
        """idx (B, T) int64 -> logits (B, T, V) and the new KV cache.

        With ``cache`` (from an earlier call) ``idx`` continues that sequence; positions are
        counted from the cache's length. ``return_hidden`` returns the final hidden states
        (B, T, C) instead of logits, for probes and classification heads.
        """
        past = 0 if cache is None else cache[0][0].shape[2]
        self._check(idx, past)
        pos = torch.arange(past, past + idx.shape[1], device=idx.device)  # (T,)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        new_cache: KVCache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, None if cache is None else cache[i])
            new_cache.append(kv)
        x = self.ln_f(x)
        return (x if return_hidden else self.head(x)), new_cache

    def loss(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        """Next-token cross-entropy :math:`-\\frac{1}{BT}\\sum_{b,t} \\log p_\\theta(y_{bt} \\mid
        x_{b,\\le t})` in nats, for inputs x (B, T) and targets y (B, T) (x shifted by one)."""
        x, y = batch
        logits, _ = self(x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    @torch.no_grad()
    def generate(
        self,
        prompt_ids: Tensor,
        *,
        max_new: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        greedy: bool = False,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Extend ``prompt_ids`` (B, T) int64 by ``max_new`` sampled tokens -> (B, T + max_new).

        Each step samples from the last position's distribution, sharpened or flattened by
        ``temperature``, optionally restricted to the ``top_k`` most likely tokens or to the
        smallest set whose probability reaches ``top_p`` (nucleus sampling); ``greedy`` takes
        the most likely token. With ``use_cache`` each step feeds only the new token and
        reuses the keys and values of the earlier ones; the context is cropped to the block
        size (the cache is rebuilt when it is full). Runs in eval mode; the model's mode is
        restored afterwards, also when a step fails.

        Raises:
            ValueError: a prompt that is not a (B, T) integer tensor with T >= 1, an id outside
                ``[0, vocab_size)``, ``max_new < 0``, or ``temperature <= 0`` without greedy.
        """
        check_prompt_ids(prompt_ids, self.config.vocab_size)
        if isinstance(max_new, bool) or int(max_new) != max_new or max_new < 0:
            raise ValueError(f"max_new must be an int >= 0, got {max_new!r}")
        if temperature <= 0 and not greedy:
            raise ValueError(f"temperature must be > 0 (or use greedy=True), got {temperature}")
        idx = prompt_ids.to(self.wte.weight.device)
        was = self.training
        self.eval()
        try:
            bs = self.config.block_size
            cache: KVCache | None = None
            for _ in range(int(max_new)):
                if cache is not None:  # feed only the newest token; earlier ones are cached
                    logits, cache = self(idx[:, -1:], cache)
                else:
                    logits, cache = self(idx[:, -bs:])
                nxt = sample_next(
                    logits[:, -1, :],
                    temperature=temperature,
                    top_k=top_k,
                    top_p=top_p,
                    greedy=greedy,
                    generator=generator,
                )
                idx = torch.cat([idx, nxt], dim=1)
                if not use_cache or cache[0][0].shape[2] >= bs:
                    cache = None  # no cache, or a full one: recompute the last block_size tokens
        finally:
            self.train(was)
        return idx

    def generate_text(self, prompt: str, *, max_new: int, **kwargs: Any) -> str:
        """Encode ``prompt`` with the model's tokenizer, :meth:`generate`, decode the whole
        text."""
        tok = self.tokenizer
        idx = tok.encode(prompt)[None]  # names an unknown character
        return tok.decode(self.generate(idx, max_new=max_new, **kwargs)[0].cpu())


def check_prompt_ids(prompt_ids: Tensor, vocab_size: int) -> None:
    """Raise ``ValueError`` unless ``prompt_ids`` is a (B, T) integer tensor, T >= 1, whose
    ids lie in ``[0, vocab_size)``: what every language model's ``generate`` takes."""
    if not isinstance(prompt_ids, Tensor) or prompt_ids.is_floating_point() or prompt_ids.ndim != 2:
        got = (
            f"{prompt_ids.dtype} {tuple(prompt_ids.shape)}"
            if isinstance(prompt_ids, Tensor)
            else type(prompt_ids).__name__
        )
        raise ValueError(f"prompt_ids must be an integer tensor of shape (B, T), got {got}")
    if prompt_ids.shape[1] < 1:
        raise ValueError("prompt_ids must hold at least one token per row (T >= 1)")
    low, high = int(prompt_ids.min()), int(prompt_ids.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise ValueError(f"prompt id {bad} is outside the vocabulary [0, {vocab_size})")


def sample_next(
    logits: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One token per row from logits (B, V) -> (B, 1), with the decoding rules of
    :meth:`GPT.generate`.

    ``top_p`` in (0, 1] keeps the smallest set of most likely tokens whose probabilities add up
    to at least ``top_p``; ``top_p=1`` keeps every token (sampling as without it).
    """
    if greedy:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    # p = 1 keeps every token, so skip the filter: its float32 cumulative sum reaches 1.0
    # before the last tokens and would drop a tail of tiny probabilities
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        # drop a token when the tokens before it already reach top_p (the first always stays)
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


# ----------------------------------------------------------------------------------------------
# masked modelling


def mask_tokens(
    tokens: Tensor,
    mask_id: int,
    vocab_size: int,
    *,
    mask_prob: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT-style corruption of tokens (B, T) -> (inputs, targets), both (B, T).

    Each position is chosen with probability ``mask_prob``; a chosen position becomes
    ``mask_id`` 80% of the time, a random token 10% and stays itself 10%. Targets hold the
    original token at chosen positions and -100 (ignored by the loss) everywhere else.
    """
    dev = tokens.device
    u = torch.rand(tokens.shape, generator=generator, device=dev)
    chosen = u < mask_prob
    how = torch.rand(tokens.shape, generator=generator, device=dev)
    inputs = tokens.clone()
    inputs[chosen & (how < 0.8)] = mask_id
    rand_pos = chosen & (how >= 0.8) & (how < 0.9)
    inputs[rand_pos] = torch.randint(
        vocab_size, (int(rand_pos.sum()),), generator=generator, device=dev
    )
    targets = torch.where(chosen, tokens, torch.full_like(tokens, -100))
    return inputs, targets


def masked_lm_loss(model: GPT, inputs: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy over the masked positions only (targets -100 elsewhere), in nats."""
    if model.config.causal:
        raise ValueError("masked modelling needs a bidirectional model (GPTConfig(causal=False))")
    logits, _ = model(inputs)
    if (targets != -100).sum() == 0:
        return logits.sum() * 0.0  # no position chosen in this batch
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100
    )


class MaskedLMObjective:
    """The Trainer's ``loss_fn(model, batch)`` for masked modelling of token windows.

    Each call corrupts the inputs x (B, T) of a ``(x, y)`` batch (``y`` is ignored: the targets
    are the inputs themselves) with :func:`mask_tokens` and returns :func:`masked_lm_loss`.
    ``mask_id`` must be the model's last id (``vocab_size - 1``): the random replacements are
    drawn from the real tokens ``0 .. mask_id - 1``. The masks are drawn from torch's global
    generator, which the Trainer seeds and checkpoints.
    """

    def __init__(self, mask_id: int, mask_prob: float = 0.15):
        if not 0 < mask_prob < 1:
            raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob}")
        self.mask_id, self.mask_prob = mask_id, mask_prob

    def __call__(self, model: GPT, batch: Tensor | tuple[Tensor, ...]) -> Tensor:
        if model.config.vocab_size != self.mask_id + 1:
            raise ValueError(
                f"mask_id must be the model's last id {model.config.vocab_size - 1}, "
                f"got {self.mask_id}"
            )
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        inputs, targets = mask_tokens(x, self.mask_id, self.mask_id, mask_prob=self.mask_prob)
        return masked_lm_loss(model, inputs, targets)


# ----------------------------------------------------------------------------------------------
# classification head (chapter 11)

POOLS = ("last", "mean")


class GPTClassifier(nn.Module):
    """A linear head on a GPT's final hidden states: sequences (B, T) -> class logits (B, K).

    Sequences are padded on the right and come with their lengths. With ``pool="last"`` the
    feature of a sequence is the hidden state at its last token; in a causal GPT that position
    has attended to every token of the sequence and to none of the padding, so padding cannot
    change the result. ``pool="mean"`` averages the hidden states of the real tokens. The GPT
    must be causal: this model has no padding mask, so in a bidirectional encoder every
    position would attend to the padding.

    The GPT is used as it is: freeze it, fine-tune it, or give it LoRA layers first.
    ``loss(batch)`` with ``batch = (ids, lengths, labels)`` is the cross-entropy of the logits,
    with the accuracy of the batch as a log, so the :class:`~genai_course.train.Trainer` trains
    it directly.
    """

    def __init__(self, gpt: GPT, num_classes: int, *, pool: str = "last", dropout: float = 0.0):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if not gpt.config.causal:
            raise ValueError(
                "GPTClassifier needs a causal GPT: without a padding mask, a bidirectional "
                "model's positions would attend to the padding"
            )
        self.gpt, self.pool, self.num_classes = gpt, pool, num_classes
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(gpt.config.n_embd, num_classes)
        nn.init.normal_(self.classifier.weight, std=0.02)
        nn.init.zeros_(self.classifier.bias)

    def features(self, idx: Tensor, lengths: Tensor) -> Tensor:
        """Pooled hidden states (B, C) of right-padded sequences idx (B, T) of ``lengths`` (B,)."""
        if lengths.shape != idx.shape[:1]:
            raise ValueError(
                f"lengths must have shape ({idx.shape[0]},) for ids {tuple(idx.shape)}, "
                f"got {tuple(lengths.shape)}"
            )
        if int(lengths.min()) < 1 or int(lengths.max()) > idx.shape[1]:
            raise ValueError(
                f"lengths must be in [1, {idx.shape[1]}] (the padded length), got "
                f"[{int(lengths.min())}, {int(lengths.max())}]"
            )
        h, _ = self.gpt(idx, return_hidden=True)  # (B, T, C)
        lengths = lengths.to(h.device)
        if self.pool == "last":
            return h[torch.arange(len(h), device=h.device), lengths - 1]  # (B, C)
        real = torch.arange(idx.shape[1], device=h.device) < lengths[:, None]  # (B, T)
        return (h * real[..., None]).sum(1) / lengths[:, None].to(h.dtype)

    def forward(self, idx: Tensor, lengths: Tensor) -> Tensor:
        """Class logits (B, K) of right-padded sequences idx (B, T) of ``lengths`` (B,)."""
        return self.classifier(self.drop(self.features(idx, lengths)))

    def loss(self, batch: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Cross-entropy (nats) of ``(ids, lengths, labels)``; logs the batch accuracy."""
        idx, lengths, labels = batch
        logits = self(idx, lengths)
        if labels.shape != logits.shape[:1] or labels.dtype != torch.long:
            raise ValueError(
                f"labels must be int64 of shape ({len(logits)},), got "
                f"{tuple(labels.shape)} {labels.dtype}"
            )
        acc = (logits.argmax(-1) == labels).float().mean()
        return F.cross_entropy(logits, labels), {"acc": acc.detach()}


def pad_sequences(seqs: list[Tensor], pad_id: int = 0) -> tuple[Tensor, Tensor]:
    """Right-pad 1-D int64 id tensors to a batch: (ids (N, T_max), lengths (N,)); the padding is
    :func:`torch.nn.utils.rnn.pad_sequence`'s, with the lengths :class:`GPTClassifier` needs."""
    if not seqs:
        raise ValueError("seqs must hold at least one sequence")
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    if int(lengths.min()) < 1:
        raise ValueError(
            f"every sequence needs at least one token; sequence {int(lengths.argmin())} is empty"
        )
    ids = nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=pad_id)
    return ids, lengths
