"""Character-level recurrent language models for names (chapter 08).

A name :math:`x_1 \\dots x_L` is framed by a boundary token :math:`\\langle b \\rangle` (id 0)
that serves as the start symbol :math:`x_0` and the end symbol :math:`x_{L+1}`. The model reads
one character at a time, carries a hidden state :math:`h_t`, and defines, given an optional
category :math:`c` (a locale),

.. math:: p_\\theta(x_{1:L+1} \\mid c) = \\prod_{t=1}^{L+1} p_\\theta(x_t \\mid x_{<t}, c),
   \\qquad p_\\theta(\\cdot \\mid x_{<t}, c) = \\mathrm{softmax}(W h_t + b),

where :math:`h_t` summarises :math:`x_0 \\dots x_{t-1}` through one of three recurrent cells
(input :math:`e_t`, the embedding of :math:`x_{t-1}`, joined with the embedding of :math:`c`):

- ``rnn`` (Elman, 1990): :math:`h_t = \\tanh(W_e e_t + W_h h_{t-1} + b)`;
- ``lstm`` (Hochreiter and Schmidhuber, 1997): gates
  :math:`i, f, o = \\sigma(\\cdot)` and a candidate :math:`g = \\tanh(\\cdot)` of
  :math:`(e_t, h_{t-1})`, a cell :math:`s_t = f \\odot s_{t-1} + i \\odot g` and
  :math:`h_t = o \\odot \\tanh(s_t)`; the additive cell update lets gradients flow over many
  steps;
- ``gru`` (Cho et al., 2014), as ``nn.GRU`` computes it: gates
  :math:`r, z = \\sigma(W_{r,z} e_t + b_{r,z} + U_{r,z} h_{t-1} + c_{r,z})`, a candidate
  :math:`\\tilde h = \\tanh\\big(W e_t + b + r \\odot (U h_{t-1} + c)\\big)` and
  :math:`h_t = z \\odot h_{t-1} + (1 - z) \\odot \\tilde h`. The reset gate acts *after*
  the product with :math:`U` (cuDNN's form, which lets one matrix product serve all three
  gates); Cho et al. reset before it, :math:`U (r \\odot h_{t-1})`, a slightly different
  function. :math:`z` is the share of the old state kept, as in Cho et al.

Generating a name samples :math:`x_1, x_2, \\dots` one at a time until the boundary token comes
out (or ``max_len`` characters). Training uses *teacher forcing*: the input at step :math:`t` is
the true :math:`x_{t-1}`, never the model's own sample, so the whole name is scored in one
pass (see :meth:`CharRNN.loss`).

Token ids: 0 is the boundary; the character with index :math:`k` in ``vocab`` has id
:math:`k + 1`. Shapes in comments: B batch (names), T time steps, E embedding (``n_embd``),
H hidden (``hidden``), V tokens (``len(vocab) + 1``), nl layers (``n_layer``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Config, check_choice, check_positive, check_range
from ..data import CharTokenizer
from .gpt import sample_next

__all__ = ["BOUNDARY", "CELLS", "IGNORE", "CharRNN", "CharRNNConfig", "names_to_batch"]

CELLS = ("rnn", "lstm", "gru")
BOUNDARY = 0  # token id of the start and end of every name
IGNORE = -100  # target of padding positions; F.cross_entropy's default ignore_index

# (nl, B, H) for rnn and gru; (h, cell state), both (nl, B, H), for lstm
RNNState = Tensor | tuple[Tensor, Tensor]


@dataclass
class CharRNNConfig(Config):
    vocab: str  # the characters, in id order (ids are shifted by one: 0 is the boundary token)
    cell: str = "gru"  # rnn | lstm | gru
    n_embd: int = 32  # a few dozen dimensions hold ~90 characters (and the locale) easily
    hidden: int = 128  # names are short; wider mostly memorises the training list
    n_layer: int = 1
    dropout: float = 0.0  # on the recurrent outputs (and between layers when n_layer > 1)
    num_conditions: int = 0  # 0: unconditional; k: conditioned on one of k categories
    max_len: int = 24  # longest generated name, in characters (faker's names have <= 20)

    def validate(self) -> None:
        if not isinstance(self.vocab, str) or not self.vocab:
            raise ValueError(f"vocab must be a non-empty str of characters, got {self.vocab!r}")
        if len(set(self.vocab)) != len(self.vocab):
            raise ValueError("vocab characters must be distinct")
        check_choice(self, "cell", CELLS)
        check_positive(self, "n_embd", "hidden", "n_layer", "max_len")
        check_positive(self, "num_conditions", minimum=0)
        check_range(self, "dropout", 0.0, 1.0)

    @property
    def vocab_size(self) -> int:
        """Number of token ids: the characters plus the boundary token."""
        return len(self.vocab) + 1


# ----------------------------------------------------------------------------------------------
# names as tensors


def names_to_batch(names: Sequence[str], tokenizer: CharTokenizer) -> tuple[Tensor, Tensor]:
    """Teacher-forcing inputs and targets for a list of N names, padded to a common length.

    For a name :math:`x_1 \\dots x_L` the inputs are :math:`\\langle b \\rangle, x_1, \\dots, x_L`
    and the targets :math:`x_1, \\dots, x_L, \\langle b \\rangle` (the next token at every step,
    ending with the end token). Character ids are the tokenizer's plus one.

    Returns:
        inputs: int64 (N, T), padded with the boundary id (never read as a target);
        targets: int64 (N, T), padded with ``IGNORE`` (-100), which the loss skips;
        T is the longest name's length plus one.

    Raises:
        ValueError: for an empty list, or naming the name and the character not in the
            vocabulary.
    """
    if isinstance(names, str):
        raise TypeError(f"names must be a sequence of str, got the string {names!r}")
    if len(names) == 0:
        raise ValueError("names must hold at least one name, got an empty sequence")
    encoded = []
    for i, name in enumerate(names):
        try:
            encoded.append(tokenizer.encode(name) + 1)  # (L,) ids >= 1
        except ValueError as err:
            raise ValueError(f"name {i} ({name!r}): {err}") from err
    T = max(len(e) for e in encoded) + 1
    inputs = torch.full((len(names), T), BOUNDARY, dtype=torch.long)
    targets = torch.full((len(names), T), IGNORE, dtype=torch.long)
    for i, ids in enumerate(encoded):
        L = len(ids)
        inputs[i, 1 : L + 1] = ids
        targets[i, :L] = ids
        targets[i, L] = BOUNDARY
    return inputs, targets


# ----------------------------------------------------------------------------------------------
# the model


class CharRNN(nn.Module):
    """Embedding, a recurrent stack (``nn.RNN`` with tanh, ``nn.LSTM`` or ``nn.GRU``) and a
    linear read-out to the next token's logits.

    A conditional model (``num_conditions > 0``) embeds the category and concatenates it with
    the character embedding at every step, so the locale is never forgotten however long the
    name. Its batches are ``(inputs, targets, condition)`` with condition int64 (B,);
    an unconditional model's are ``(inputs, targets)``.
    """

    def __init__(self, config: CharRNNConfig):
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.n_embd)
        self.cond_embed = nn.Embedding(c.num_conditions, c.n_embd) if c.num_conditions else None
        n_in = c.n_embd * (2 if c.num_conditions else 1)
        cell = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[c.cell]
        self.rnn = cell(
            n_in,
            c.hidden,
            num_layers=c.n_layer,
            batch_first=True,
            dropout=c.dropout if c.n_layer > 1 else 0.0,
        )
        if c.cell == "lstm":
            # forget-gate bias 1 (PyTorch's gate order is i, f, g, o): the cell starts out
            # remembering, a standard fix for slow early LSTM training (Jozefowicz et al., 2015)
            for name, p in self.rnn.named_parameters():
                if name.startswith("bias_ih"):
                    with torch.no_grad():
                        p[c.hidden : 2 * c.hidden].fill_(1.0)
                elif name.startswith("bias_hh"):
                    with torch.no_grad():
                        p[c.hidden : 2 * c.hidden].zero_()
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.hidden, c.vocab_size)

    @property
    def tokenizer(self) -> CharTokenizer:
        """The :class:`~genai_course.data.CharTokenizer` of ``config.vocab`` (ids without the
        shift by one)."""
        return CharTokenizer(self.config.vocab)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def _device(self) -> torch.device:
        return self.embed.weight.device

    def _condition(self, condition: int | Sequence[int] | Tensor | None, n: int) -> Tensor | None:
        """Check ``condition`` against the config and return int64 (n,) ids (or None)."""
        k = self.config.num_conditions
        if k == 0:
            if condition is not None:
                raise ValueError(
                    "this model is unconditional (num_conditions=0) but a condition was given; "
                    "build it with num_conditions > 0 to condition on a category"
                )
            return None
        if condition is None:
            raise ValueError(
                f"this model is conditioned on one of {k} categories: pass one (labels= to "
                f"sample, condition= elsewhere), an int or int64 ids of shape ({n},)"
            )
        if isinstance(condition, Tensor) and condition.is_floating_point():
            raise ValueError(f"condition must hold integer ids, got dtype {condition.dtype}")
        cond = torch.as_tensor(condition, dtype=torch.long, device=self._device)
        if cond.ndim == 0:
            cond = cond.expand(n)
        if cond.shape != (n,):
            raise ValueError(
                f"expected one condition per name, shape ({n},), got {tuple(cond.shape)}"
            )
        lo, hi = (int(cond.min()), int(cond.max())) if n else (0, 0)
        if lo < 0 or hi >= k:
            raise ValueError(f"condition ids must be in [0, {k}), got values in [{lo}, {hi}]")
        return cond

    def forward(
        self,
        idx: Tensor,
        condition: int | Sequence[int] | Tensor | None = None,
        state: RNNState | None = None,
    ) -> tuple[Tensor, RNNState]:
        """idx (B, T) int64 token ids -> logits (B, T, V) of the next token, and the state.

        ``condition``: the category of each name, int64 (B,) or one int for all (required
        exactly when ``num_conditions > 0``). ``state`` (from an earlier call) continues those
        sequences, so feeding a name in pieces gives the same logits as feeding it whole;
        ``None`` starts from zeros.
        """
        if idx.ndim != 2 or idx.dtype != torch.long:
            raise ValueError(
                f"expected token ids of shape (B, T) and dtype int64, got "
                f"{tuple(idx.shape)} {idx.dtype}"
            )
        cond = self._condition(condition, idx.shape[0])
        x = self.embed(idx)  # (B, T, E)
        if cond is not None:
            e_c = self.cond_embed(cond)[:, None, :].expand(-1, idx.shape[1], -1)  # (B, T, E)
            x = torch.cat([x, e_c], dim=-1)  # (B, T, 2E)
        h, state = self.rnn(x, state)  # (B, T, H); state (nl, B, H), or a pair for lstm
        return self.head(self.drop(h)), state  # (B, T, V)

    def encode_names(
        self, names: Sequence[str], condition: int | Sequence[int] | Tensor | None = None
    ) -> tuple[Tensor, ...]:
        """A batch for :meth:`loss` on the CPU: ``(inputs, targets)``, plus the condition
        int64 (N,) for a conditional model (see :func:`names_to_batch`)."""
        inputs, targets = names_to_batch(names, self.tokenizer)
        cond = self._condition(condition, len(names))
        return (inputs, targets) if cond is None else (inputs, targets, cond.cpu())

    def loss(self, batch: Sequence[Tensor]) -> Tensor:
        """Teacher-forced next-character cross-entropy in nats per token,

        .. math:: \\mathcal L(\\theta) = -\\frac{1}{\\sum_n (L_n + 1)} \\sum_{n=1}^{B}
           \\sum_{t=1}^{L_n + 1} \\log p_\\theta\\big(x^{(n)}_t \\mid x^{(n)}_{<t}, c^{(n)}\\big),

        the negative log-likelihood of the batch's names (end tokens included) divided by
        their number of tokens. Padding (target ``IGNORE``) is skipped, so it neither adds to
        the sum nor to the count. ``batch`` is ``(inputs, targets)`` or
        ``(inputs, targets, condition)`` as made by :meth:`encode_names`.
        """
        if len(batch) not in (2, 3):
            raise ValueError(
                "batch must be (inputs, targets) or (inputs, targets, condition), "
                f"got {len(batch)} items"
            )
        x, y = batch[0], batch[1]
        logits, _ = self(x, batch[2] if len(batch) == 3 else None)
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=IGNORE
        )

    @torch.no_grad()
    def log_prob(
        self,
        names: Sequence[str],
        condition: int | Sequence[int] | Tensor | None = None,
        *,
        batch_size: int = 1024,
    ) -> Tensor:
        """:math:`\\log p_\\theta(x_{1:L+1} \\mid c)` of each name, end token included, in nats:
        float32 (N,) on the CPU. Computed in eval mode (no dropout)."""
        x, y, *rest = self.encode_names(names, condition)
        cond = rest[0] if rest else None
        was = self.training
        self.eval()
        out = []
        try:
            for s in range(0, len(x), batch_size):
                sl = slice(s, s + batch_size)
                logits, _ = self(
                    x[sl].to(self._device), None if cond is None else cond[sl].to(self._device)
                )  # (b, T, V)
                nll = F.cross_entropy(
                    logits.transpose(1, 2),
                    y[sl].to(self._device),
                    ignore_index=IGNORE,
                    reduction="none",
                )  # (b, T), 0 at padding
                out.append(-nll.sum(1).float().cpu())
        finally:
            self.train(was)
        return torch.cat(out)

    def nats_per_char(
        self, names: Sequence[str], condition: int | Sequence[int] | Tensor | None = None
    ) -> float:
        """Mean negative log-likelihood per token of ``names`` (each name's end token counts
        as one character): the loss over the whole list at once, in nats."""
        tokens = sum(len(n) + 1 for n in names)
        return -float(self.log_prob(names, condition).sum()) / tokens

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        labels: int | Sequence[int] | Tensor | None = None,
        temperature: float = 1.0,
        greedy: bool = False,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
    ) -> list[str]:
        """Generate ``n`` names, each until the end token comes out or ``max_len`` characters.

        Each step draws the next token from :math:`\\mathrm{softmax}(\\ell / \\tau)`, with
        :math:`\\ell` the logits and :math:`\\tau` the ``temperature`` (below 1 sharper, above 1
        flatter), optionally restricted by ``top_k``/``top_p`` as in
        :meth:`~genai_course.models.gpt.GPT.generate`; ``greedy`` takes the most likely token.
        ``labels`` (the condition, e.g. a locale) is one int for all names or int64 (n,).
        ``generator`` must live on the model's device. Runs in eval mode.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if temperature <= 0 and not greedy:
            raise ValueError(f"temperature must be > 0 (or use greedy=True), got {temperature}")
        cond = self._condition(labels, n)
        max_len = self.config.max_len
        was = self.training
        self.eval()
        try:
            tok = torch.full((n, 1), BOUNDARY, dtype=torch.long, device=self._device)  # start
            out = torch.full((n, max_len), BOUNDARY, dtype=torch.long, device=self._device)
            done = torch.zeros(n, dtype=torch.bool, device=self._device)
            state = None
            for t in range(max_len):
                logits, state = self(tok, cond, state)  # (n, 1, V)
                tok = sample_next(
                    logits[:, -1],
                    temperature=temperature,
                    top_k=top_k,
                    top_p=top_p,
                    greedy=greedy,
                    generator=generator,
                )  # (n, 1)
                tok = tok.masked_fill(done[:, None], BOUNDARY)  # finished names stay finished
                out[:, t] = tok[:, 0]
                done |= tok[:, 0] == BOUNDARY
                if bool(done.all()):
                    break
        finally:
            self.train(was)
        tokenizer = self.tokenizer
        names = []
        for row in out.cpu():
            end = (row == BOUNDARY).nonzero()
            length = int(end[0]) if len(end) else max_len
            names.append(tokenizer.decode(row[:length] - 1))
        return names
