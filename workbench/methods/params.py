"""Typed `method.params`: each method declares its knobs as a dataclass, checked when it is built.

A misspelt key fails naming the closest valid one (as config keys do), values are converted to
the declared type once (`"true"` from a shell is a bool, `[0.9, 1.1]` a tuple), and the seeds'
UPPER-case names (PubMedCLIP's `PRETRAINED_MODEL_PATH`) are accepted because keys are matched
without case.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple, Type, TypeVar


class MethodParamsError(ValueError):
    """A `method.params` key the method does not have, or a value of the wrong type."""


@dataclass(frozen=True)
class MethodParams:
    """The knobs every method takes."""

    steps_per_epoch: int = 0  # > 0: an "epoch" (between validations) is this many optimiser steps


P = TypeVar("P", bound=MethodParams)


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{value!r} is not a yes/no value")
    return bool(value)


def _convert(value: Any, kind: Any) -> Any:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        kind = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is bool:
        return _flag(value)
    if kind in (int, float, str):
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{value!r} is not a whole number")
        return kind(value)
    if origin in (tuple, Tuple):
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        inner = args[0] if args else float
        return tuple(_convert(v, inner) for v in items)
    return value


def parse_params(schema: Type[P], raw: Optional[Mapping[str, Any]], method: str) -> P:
    """`raw` (config `method.params`) as an instance of `schema`, keys matched without case."""
    hints = typing.get_type_hints(schema)
    names = {f.name: f for f in dataclasses.fields(schema)}
    values = {}
    for key, value in dict(raw or {}).items():
        name = str(key).lower()
        if name not in names:
            close = difflib.get_close_matches(name, list(names), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise MethodParamsError(f"method.params.{key} is not a parameter of method {method!r}{hint} "
                                    f"Its parameters: {sorted(names)}.")
        try:
            values[name] = _convert(value, hints[name])
        except (TypeError, ValueError) as err:
            raise MethodParamsError(f"method.params.{key}={value!r} for method {method!r}: {err}; expected "
                                    f"{getattr(hints[name], '__name__', hints[name])}.") from None
    return schema(**values)
