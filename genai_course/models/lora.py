"""Adapting a trained model cheaply: LoRA and bottleneck adapters (chapter 11).

Both methods freeze every weight of the base model and train a few new ones.

- **LoRA** (Hu et al., 2022) adds a low-rank update to chosen linear layers. A layer with
  frozen weight :math:`W \\in \\mathbb{R}^{d_\\text{out} \\times d_\\text{in}}` computes

  .. math:: h = W x + \\frac{\\alpha}{r} B A x, \\qquad A \\in \\mathbb{R}^{r \\times d_\\text{in}},
     \\quad B \\in \\mathbb{R}^{d_\\text{out} \\times r},

  with :math:`r \\ll \\min(d_\\text{in}, d_\\text{out})`: :math:`r (d_\\text{in} + d_\\text{out})`
  trainable numbers instead of :math:`d_\\text{in} d_\\text{out}`. :math:`B` starts at zero, so
  the adapted model starts exactly equal to the base. After training, :math:`\\frac{\\alpha}{r}
  BA` can be folded into :math:`W` (:func:`merge_lora`): inference then costs nothing extra.
  Hu et al. adapted only the attention's query and value projections :math:`W_q, W_v`; GPT
  fuses :math:`W_q, W_k, W_v` into one ``qkv`` layer, whose LoRA is a single rank-r update of
  the stacked matrix, and the chapter adapts the MLP's layers as well.
- **Adapters** insert a small bottleneck network after chosen submodules,
  :math:`h \\mapsto h + W_\\text{up}\\, \\sigma(W_\\text{down} h)`, with :math:`W_\\text{up}`
  zero so each adapter starts exactly as the identity. Houlsby et al. (2019) put two in each
  transformer layer, after the attention and after the MLP (``targets=("attn", "mlp")`` in
  GPT), started them near the identity with small random weights, and trained the layer norms
  too; one adapter per layer, after the MLP (``("mlp",)``, what chapter 11 uses), is the
  placement of Pfeiffer et al. (2021). Adapters cannot be merged away.

Typical use on the GPT of chapter 09::

    model = load_pretrained("gpt-pydocs")
    names = add_lora(model, LoRAConfig(rank=8, targets=("qkv", "proj")))  # freezes the rest
    ...  # train: only the LoRA factors have requires_grad
    save_adapters(model, "lora.safetensors")  # a few kB: only A and B of each layer

**Naming modules.** ``targets`` are matched against the dotted names of
``model.named_modules()`` (``"blocks.0.attn.qkv"``). A target with a wildcard (``*``, ``?``
or ``[``) is a shell pattern (:func:`fnmatch.fnmatchcase`) matched against the *whole* name
(``"blocks.1.*"``); any other target matches a name equal to it or ending in ``"." + target``,
so ``"proj"`` matches ``blocks.0.attn.proj`` and ``blocks.0.mlp.proj`` but ``"attn.proj"`` only
the first and ``"roj"`` nothing.

**State-dict keys stay the same.** A :class:`LoRALinear` keeps the original ``weight`` and
``bias`` parameters under their own names, and an adapter lives *inside* the module it follows
(``blocks.0.mlp.adapter``), applied by a forward hook. So the base model's keys are unchanged
and a base checkpoint still loads into an adapted model (``strict=False`` for the new keys).

Shapes in comments: N any leading dimensions, I ``in_features``, O ``out_features``, r rank,
D the adapted width, b the bottleneck.
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import atomic_write
from ..config import Config, check_positive, check_range

__all__ = [
    "Adapter",
    "LoRAConfig",
    "LoRALinear",
    "add_adapters",
    "add_lora",
    "count_parameters",
    "freeze_except_adapters",
    "load_adapters",
    "lora_state_dict",
    "matches_target",
    "merge_lora",
    "save_adapters",
    "trainable_parameters",
    "unmerge_lora",
]

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh}


@dataclass
class LoRAConfig(Config):
    rank: int = 8  # r: the update BA has rank <= r; 4-16 is plenty for a small model
    alpha: float = 8.0  # the update is scaled by alpha / r. Hu et al. set alpha to the first r
    # they tried and kept it for other ranks, so as not to retune the learning rate; Kalajdzievski
    # (2023) shows that under alpha / r learning slows as r grows, and argues for alpha / sqrt(r)
    dropout: float = 0.0  # on the input of the low-rank path only; the base path is untouched
    # nn.Linear modules to adapt, by name (see the module docstring). In GPT: the fused
    # q, k, v projection and both output projections (attn.proj, mlp.proj); Hu et al.
    # adapted W_q and W_v only
    targets: tuple[str, ...] = ("qkv", "proj")

    def validate(self) -> None:
        if isinstance(self.targets, str):  # tuple("qkv") would be ("q", "k", "v")
            self.targets = (self.targets,)
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"LoRAConfig.rank must be an integer >= 1, got {self.rank!r}")
        check_positive(self, "alpha", minimum=0, strict=True)  # the scaling is alpha / rank
        check_range(self, "dropout", 0.0, 1.0)
        _check_targets(self.targets)

    @property
    def scaling(self) -> float:
        """The factor :math:`\\alpha / r` of the low-rank update."""
        return self.alpha / self.rank


# ----------------------------------------------------------------------------------------------
# helpers


def _check_targets(targets: Sequence[str]) -> None:
    if not targets or not all(isinstance(t, str) and t for t in targets):
        raise ValueError(
            f"targets must be a non-empty sequence of non-empty module names or patterns, "
            f"e.g. ('qkv', 'proj') or ('blocks.*.mlp',); got {targets!r}"
        )


def matches_target(name: str, targets: Iterable[str]) -> bool:
    """Whether the dotted module ``name`` is selected by one of ``targets``.

    A target containing ``*``, ``?`` or ``[`` is a shell pattern matched against the whole name;
    any other target matches ``name`` itself or a suffix of it that starts after a dot.
    """
    for t in targets:
        if any(c in t for c in "*?["):
            if fnmatch.fnmatchcase(name, t):
                return True
        elif name == t or name.endswith("." + t):
            return True
    return False


def _few(names: Sequence[str], k: int = 12) -> str:
    shown = ", ".join(names[:k])
    return shown + (f", ... ({len(names)} in all)" if len(names) > k else "")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)  # also works for the "0", "1", ... of Sequential and ModuleList


def _inside(name: str, prefixes: Iterable[str]) -> bool:
    """Whether ``name`` is a strict descendant of one of the module names ``prefixes``."""
    return any(p == "" or name.startswith(p + ".") for p in prefixes if p != name)


# ----------------------------------------------------------------------------------------------
# modules


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update (Hu et al., 2022).

    .. math:: h = W x + b + \\frac{\\alpha}{r} B A x,

    with the base :math:`W` (O, I) and :math:`b` (O,) frozen, :math:`A` (r, I) drawn like
    ``nn.Linear``'s weights (Kaiming-uniform) and :math:`B` (O, r) zero, so that at creation the
    layer computes exactly what ``base`` computes. Dropout, when set, acts on the :math:`x` of
    the low-rank path only.

    The ``weight`` and ``bias`` parameters are ``base``'s own (the same tensors, not copies) and
    keep their names, so state-dict keys do not change. :meth:`merge` folds the update into
    ``weight``; while merged the forward pass is the plain linear layer, and :math:`A`, :math:`B`
    receive no gradient: unmerge before training again.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        LoRAConfig(rank=rank, alpha=alpha, dropout=dropout)  # the same validation, one place
        self.in_features, self.out_features = base.in_features, base.out_features
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        self.register_parameter("weight", base.weight)  # (O, I), frozen
        self.register_parameter("bias", base.bias)  # (O,) or None, frozen
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        kw = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, **kw))  # (r, I)
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, **kw))  # (O, r)
        # A like nn.Linear's own init: the input path is well scaled; B = 0 makes BA = 0
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    def delta_weight(self) -> Tensor:
        """The update :math:`\\frac{\\alpha}{r} BA`, shape (O, I)."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def forward(self, x: Tensor) -> Tensor:
        y = F.linear(x, self.weight, self.bias)  # (N, O)
        if self.merged:
            return y
        low = F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B)  # (N, r) -> (N, O)
        return y + self.scaling * low

    @torch.no_grad()
    def merge(self) -> None:
        """:math:`W \\leftarrow W + \\frac{\\alpha}{r} BA`, in place; a no-op when merged."""
        if not self.merged:
            self.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """:math:`W \\leftarrow W - \\frac{\\alpha}{r} BA`, undoing :meth:`merge` up to rounding;
        a no-op when not merged."""
        if self.merged:
            self.weight -= self.delta_weight()
            self.merged = False

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, rank={self.rank}, alpha={self.alpha}, "
            f"merged={self.merged}"
        )


class Adapter(nn.Module):
    """A bottleneck adapter (Houlsby et al., 2019), a residual MLP on features of width D.

    .. math:: h \\mapsto h + W_\\text{up}\\, \\sigma\\big(W_\\text{down}\\, \\mathrm{LN}(h)
       + b_\\text{down}\\big) + b_\\text{up},

    :math:`W_\\text{down}` (b, D), :math:`W_\\text{up}` (D, b). :math:`W_\\text{up}` and
    :math:`b_\\text{up}` start at zero, so a new adapter is exactly the identity; Houlsby et al.
    draw both layers small and random instead, a near-identity start. (With
    :math:`W_\\text{up} = 0` the first gradient reaches the up-projection only, as it reaches
    LoRA's zero :math:`B` only; after one step both layers learn.) The layer norm (off by default; Houlsby et al.'s
    adapter has none inside) is applied to the input of the bottleneck only.
    h (N, D) -> (N, D); :math:`2Db + b + D` parameters, :math:`+ 2D` with the layer norm.
    """

    def __init__(
        self, dim: int, bottleneck: int, *, activation: str = "gelu", layer_norm: bool = False
    ):
        super().__init__()
        if dim < 1 or bottleneck < 1:
            raise ValueError(f"dim and bottleneck must be >= 1, got {dim} and {bottleneck}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}")
        self.dim = dim
        self.ln = nn.LayerNorm(dim) if layer_norm else nn.Identity()
        self.down = nn.Linear(dim, bottleneck)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: Tensor) -> Tensor:
        if h.shape[-1] != self.dim:
            raise ValueError(
                f"this adapter expects features of width {self.dim}, got shape {tuple(h.shape)}"
            )
        return h + self.up(self.act(self.down(self.ln(h))))  # (N, D) -> (N, b) -> (N, D)


def _apply_adapter(module: nn.Module, args: tuple, output):
    """Forward hook of a module with an ``adapter`` child: pass its output through it. A tuple
    output (a GPT ``Block`` returns ``(x, kv)``) has its first element adapted."""
    if isinstance(output, tuple):
        return (module.adapter(output[0]), *output[1:])
    return module.adapter(output)


# ----------------------------------------------------------------------------------------------
# adapting a model


def freeze_except_adapters(model: nn.Module) -> None:
    """Set ``requires_grad`` on the LoRA factors and adapter parameters only, off elsewhere."""
    for p in model.parameters():
        p.requires_grad_(False)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            m.lora_A.requires_grad_(True)
            m.lora_B.requires_grad_(True)
        elif isinstance(m, Adapter):
            for p in m.parameters():
                p.requires_grad_(True)


def add_lora(
    model: nn.Module, config: LoRAConfig | None = None, *, freeze: bool = True
) -> list[str]:
    """Replace, in place, each ``nn.Linear`` of ``model`` selected by ``config.targets`` with a
    :class:`LoRALinear` around it; return the adapted names in ``named_modules`` order.

    With ``freeze`` every parameter but the LoRA factors and adapters is frozen
    (:func:`freeze_except_adapters`). Raises ``ValueError`` when no linear layer matches (the
    message lists the available ones), when a match is already adapted, and when a match's
    weight is shared with another module: GPT's ``head.weight`` is its token embedding, and
    merging an update into it would change the embedding too.
    """
    config = config or LoRAConfig()
    modules = dict(model.named_modules())
    wrapped = [n for n, m in modules.items() if isinstance(m, (LoRALinear, Adapter))]
    linears = [
        n
        for n, m in modules.items()
        if isinstance(m, (nn.Linear, LoRALinear)) and not _inside(n, wrapped)
    ]
    chosen = [n for n in linears if matches_target(n, config.targets)]
    if not chosen:
        raise ValueError(
            f"no nn.Linear of {type(model).__name__} matches targets {config.targets}; "
            f"its linear layers: {_few(linears)}"
        )
    owners: dict[int, list[str]] = {}  # tensor -> every name it goes by (tied weights)
    for pname, p in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(p), []).append(pname)
    for name in chosen:
        m = modules[name]
        if isinstance(m, LoRALinear):
            raise ValueError(f"{name or 'the model'} already has LoRA; it cannot be added twice")
        if name == "":
            raise ValueError(
                "the model itself is an nn.Linear and cannot be replaced in place: "
                "use LoRALinear(model, ...) or wrap it in nn.Sequential first"
            )
        others = [o for o in owners[id(m.weight)] if o != _join(name, "weight")]
        if others:
            raise ValueError(
                f"{name}.weight is shared with {', '.join(others)} (tied weights): a LoRA update "
                f"merged into it would change both; leave {name} out of the targets"
            )
    for name in chosen:
        _replace(model, name, LoRALinear(modules[name], config.rank, config.alpha, config.dropout))
    if freeze:
        freeze_except_adapters(model)
    return chosen


def _output_width(module: nn.Module) -> int | None:
    """out_features of the last linear layer registered in ``module`` (itself included)."""
    widths = [m.out_features for m in module.modules() if isinstance(m, (nn.Linear, LoRALinear))]
    return widths[-1] if widths else None


def add_adapters(
    model: nn.Module,
    targets: Sequence[str | type[nn.Module]] = ("mlp",),
    bottleneck: int = 16,
    *,
    dim: int | None = None,
    activation: str = "gelu",
    layer_norm: bool = False,
    freeze: bool = True,
) -> list[str]:
    """Insert an :class:`Adapter` after each submodule of ``model`` selected by ``targets``;
    return their names in ``named_modules`` order.

    ``targets`` holds module names or patterns (matched as described in the module docstring)
    and module classes (every instance is selected). A selected module gets an ``adapter``
    child and a forward hook, so its output ``y`` becomes ``adapter(y)``; of a tuple output,
    the first element. In GPT, ``("mlp",)`` adapts each block's MLP output before the residual
    sum (one adapter per layer, as Pfeiffer et al., 2021), ``("attn", "mlp")`` the attention's
    output too (two per layer, as Houlsby et al., 2019) and ``(Block,)`` the output of each
    whole block. The adapter's width is ``dim`` or else the ``out_features`` of the last linear
    layer registered in the module. With ``freeze`` every parameter but the LoRA factors and
    adapters is frozen, layer norms included (Houlsby et al. trained those too: set their
    ``requires_grad`` afterwards to do the same).
    """
    targets = (targets,) if isinstance(targets, (str, type)) else tuple(targets)
    names = tuple(t for t in targets if isinstance(t, str))
    classes = tuple(t for t in targets if isinstance(t, type) and issubclass(t, nn.Module))
    if not targets or len(names) + len(classes) < len(targets):
        raise ValueError(
            f"targets must be a non-empty sequence of module names, patterns or nn.Module "
            f"classes, e.g. ('mlp',) or (Block,); got {targets!r}"
        )
    if names:
        _check_targets(names)
    modules = dict(model.named_modules())
    wrapped = [n for n, m in modules.items() if isinstance(m, (LoRALinear, Adapter))]
    candidates = [n for n, m in modules.items() if not isinstance(m, Adapter)]
    candidates = [n for n in candidates if not _inside(n, wrapped)]
    chosen = [
        n
        for n in candidates
        if matches_target(n, names) or (classes and isinstance(modules[n], classes))
    ]
    if not chosen:
        raise ValueError(
            f"no submodule of {type(model).__name__} matches targets {targets}; "
            f"its submodules: {_few([n for n in candidates if n])}"
        )
    widths = {}
    for name in chosen:
        m = modules[name]
        if hasattr(m, "adapter"):
            raise ValueError(
                f"{name or 'the model'} already has an adapter (or an 'adapter' attribute)"
            )
        widths[name] = dim if dim is not None else _output_width(m)
        if widths[name] is None:
            raise ValueError(
                f"cannot tell the output width of {name or 'the model'} "
                f"({type(m).__name__}, no linear layer inside): pass dim="
            )
    for name in chosen:
        m = modules[name]
        p = next(m.parameters(), None)
        m.adapter = Adapter(widths[name], bottleneck, activation=activation, layer_norm=layer_norm)
        if p is not None:
            m.adapter.to(device=p.device, dtype=p.dtype)
        m.register_forward_hook(_apply_adapter)
    if freeze:
        freeze_except_adapters(model)
    return chosen


def merge_lora(model: nn.Module) -> list[str]:
    """Fold every LoRA update into its base weight (:meth:`LoRALinear.merge`); return the names."""
    names = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    for n in names:
        model.get_submodule(n).merge()
    return names


def unmerge_lora(model: nn.Module) -> list[str]:
    """Undo :func:`merge_lora` (:meth:`LoRALinear.unmerge`); return the names."""
    names = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    for n in names:
        model.get_submodule(n).unmerge()
    return names


def trainable_parameters(model: nn.Module) -> int:
    """Number of scalars with ``requires_grad`` (a tied tensor counts once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) numbers of scalars; tied tensors count once."""
    return trainable_parameters(model), sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------
# saving and loading only what was trained


def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The adapter tensors of ``model`` by their state-dict names: ``lora_A`` and ``lora_B`` of
    each :class:`LoRALinear` and the parameters of each :class:`Adapter`; no base weight."""
    out: dict[str, Tensor] = {}
    for name, m in model.named_modules():
        if isinstance(m, LoRALinear):
            out[_join(name, "lora_A")] = m.lora_A.detach()
            out[_join(name, "lora_B")] = m.lora_B.detach()
        elif isinstance(m, Adapter):
            out.update({_join(name, k): v for k, v in m.state_dict().items()})
    return out


def _scalings(model: nn.Module) -> dict[str, float]:
    return {n: m.scaling for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def save_adapters(model: nn.Module, path: str | Path) -> Path:
    """Write :func:`lora_state_dict` to a ``.safetensors`` file, atomically; the scaling
    :math:`\\alpha / r` of each LoRA layer goes in the file's metadata, for
    :func:`load_adapters` to check."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in lora_state_dict(model).items()}
    if not tensors:
        raise ValueError("the model has no LoRA layers or adapters to save")
    metadata = {"format": "pt", "lora_scaling": json.dumps(_scalings(model))}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_adapters(model: nn.Module, path: str | Path) -> None:
    """Load a file of :func:`save_adapters` into a model adapted the same way.

    The model must already have the same LoRA layers and adapters (call :func:`add_lora` and
    :func:`add_adapters` with the same settings first) and be unmerged. Raises ``ValueError``,
    listing every problem, when the file lacks a tensor the model expects, holds one the model
    has no place for, a shape differs (another rank or bottleneck) or a LoRA scaling
    :math:`\\alpha / r` differs; nothing is loaded then.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no adapter file at {path}")
    expected = lora_state_dict(model)
    if not expected:
        raise ValueError(
            "the model has no LoRA layers or adapters: call add_lora / add_adapters with the "
            f"settings used for {path.name} before loading it"
        )
    merged = [n for n, m in model.named_modules() if isinstance(m, LoRALinear) and m.merged]
    if merged:
        raise ValueError(f"unmerge_lora(model) first: merged LoRA layers {_few(merged)}")
    with safe_open(str(path), framework="pt") as f:
        loaded = {k: f.get_tensor(k) for k in f.keys()}
        scaling = json.loads((f.metadata() or {}).get("lora_scaling", "{}"))
    problems = []
    missing = [k for k in expected if k not in loaded]
    unexpected = [k for k in loaded if k not in expected]
    if missing:
        problems.append(f"missing from the file: {_few(missing)}")
    if unexpected:
        problems.append(f"in the file but not in the model: {_few(unexpected)}")
    for k in expected.keys() & loaded.keys():
        if expected[k].shape != loaded[k].shape:
            problems.append(
                f"{k} has shape {tuple(loaded[k].shape)} in the file but "
                f"{tuple(expected[k].shape)} in the model (another rank or bottleneck?)"
            )
    for name, s in _scalings(model).items():
        if name in scaling and not math.isclose(scaling[name], s):
            problems.append(
                f"{name} was trained with scaling alpha/r = {scaling[name]:g}, the model uses "
                f"{s:g} (build the LoRA with the same rank and alpha)"
            )
    if problems:
        raise ValueError(f"cannot load {path.name} into this model:\n  " + "\n  ".join(problems))
    with torch.no_grad():
        for k, v in expected.items():
            v.copy_(loaded[k])  # v shares storage with the parameter or buffer
