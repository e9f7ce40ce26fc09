"""One base for every configuration dataclass, and the checks they share.

A config says what a model (or a run) is built from, in plain JSON-able fields, so that a
checkpoint can rebuild its model from the manifest. Written once here, for all of them:

- :meth:`Config.to_dict` / :meth:`Config.from_dict`, nested sub-configs included
  (``DiffusionConfig.unet`` is a :class:`~genai_course.models.unet.UNetConfig`);
- coercion of JSON values back to the annotated types (a list read from JSON becomes the
  ``tuple[int, ...]`` the field declares, a dict becomes the sub-config);
- :func:`check_choice`, :func:`check_positive`, :func:`check_range`, so that every bad value is
  reported in one style: ``"VAEConfig.latent_dim must be >= 1, got 0"``.

A subclass is a ``@dataclass`` that inherits :class:`Config` and puts its own rules in
``validate()``; the base's ``__post_init__`` coerces the fields first, then calls it::

    @dataclass
    class MyConfig(Config):
        width: int = 32
        norm: str = "group"

        def validate(self) -> None:
            check_positive(self, "width")
            check_choice(self, "norm", ("group", "layer"))

This module imports nothing from the package (the idea is diffusers' ``ConfigMixin``).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Collection, Mapping
from typing import Any, TypeVar

__all__ = ["Config", "check_choice", "check_positive", "check_range"]

C = TypeVar("C", bound="Config")


def _label(owner: Any, name: str) -> str:
    """``"VAEConfig.latent_dim"`` for a config, the bare name for a string owner."""
    if isinstance(owner, str):
        return f"{owner}.{name}" if owner else name
    return f"{type(owner).__name__}.{name}"


def _value(owner: Any, name: str, value: Any) -> Any:
    return getattr(owner, name) if value is _MISSING else value


_MISSING = object()


def check_choice(owner: Any, name: str, choices: Collection[Any], value: Any = _MISSING) -> None:
    """Raise ``ValueError`` unless ``owner.name`` (or ``value``) is one of ``choices``.

    ``owner`` is the config (its class name prefixes the message) or a string prefix.
    """
    v = _value(owner, name, value)
    if v not in choices:
        known = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{_label(owner, name)} must be one of {known}; got {v!r}")


def check_positive(
    owner: Any, *names: str, minimum: float = 1, strict: bool = False, value: Any = _MISSING
) -> None:
    """Raise ``ValueError`` unless each ``owner.name`` is ``>= minimum`` (``> minimum`` when
    ``strict``). The default, ``>= 1``, is the rule for counts and widths; use
    ``minimum=0, strict=True`` for a scale that must be positive."""
    for name in names:
        v = _value(owner, name, value)
        ok = v > minimum if strict else v >= minimum
        if not ok:
            sign = ">" if strict else ">="
            raise ValueError(f"{_label(owner, name)} must be {sign} {minimum:g}, got {v!r}")


def check_range(
    owner: Any,
    name: str,
    low: float,
    high: float,
    *,
    closed: str = "left",
    value: Any = _MISSING,
) -> None:
    """Raise ``ValueError`` unless ``owner.name`` lies in the interval from ``low`` to ``high``.

    ``closed`` says which ends belong to it: ``"left"`` for ``[low, high)`` (the default, as a
    dropout rate), ``"right"`` for ``(low, high]``, ``"both"`` or ``"neither"``.
    """
    if closed not in ("left", "right", "both", "neither"):
        raise ValueError(f"closed must be 'left', 'right', 'both' or 'neither', got {closed!r}")
    v = _value(owner, name, value)
    left = closed in ("left", "both")
    right = closed in ("right", "both")
    ok = (v >= low if left else v > low) and (v <= high if right else v < high)
    if not ok:
        interval = f"{'[' if left else '('}{low:g}, {high:g}{']' if right else ')'}"
        raise ValueError(f"{_label(owner, name)} must be in {interval}, got {v!r}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _options(hint: Any) -> tuple[Any, ...]:
    """The members of ``X | Y | None`` (or ``(hint,)``)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _coerce(hint: Any, value: Any) -> Any:
    """``value`` as read from JSON, turned back into what ``hint`` declares."""
    for option in _options(hint):
        if isinstance(option, type) and issubclass(option, Config) and isinstance(value, Mapping):
            return option.from_dict(value)
        if typing.get_origin(option) is tuple and isinstance(value, (list, tuple)):
            args = typing.get_args(option)
            if len(args) == 2 and args[1] is Ellipsis:
                kinds = (args[0],) * len(value)
            elif len(args) == len(value):
                kinds = args
            else:
                return tuple(value)
            return tuple(k(v) if k in (int, float, str) else v for k, v in zip(kinds, value))
    return value


class Config:
    """Base of the course's config dataclasses: ``to_dict``/``from_dict`` and validation.

    Subclasses are ``@dataclass``-decorated and override :meth:`validate`.
    """

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            coerced = _coerce(hints[f.name], value)
            if coerced is not value:
                object.__setattr__(self, f.name, coerced)  # frozen configs too
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field and what was expected; nothing by default."""

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON-able values (sub-configs as dicts, tuples as tuples)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any]) -> C:
        """Rebuild a config from :meth:`to_dict`'s output (or its JSON); unknown keys are an
        error that lists the fields."""
        if not isinstance(values, Mapping):
            raise TypeError(f"{cls.__name__}.from_dict expects a mapping, got {type(values)}")
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"{cls.__name__} has no field(s) {unknown}; its fields: {names}")
        return cls(**values)
