"""Flags whose values come from a registry: ``--task``, ``--model``, ``--model.preset``, ``--device``.

`choice` types a ``str`` field as a ``Literal`` of the names known when the command line is parsed, plugins
included, so ``--help`` lists them, shell completion offers them and tyro refuses anything else in one line.
The field stays a plain ``str`` to Python: a config built in code or read from a file is not affected.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence
from typing import Any, Literal

import tyro


def _default_hint(label: str) -> str:
    # tyro labels a constructor_factory field's default by the list its argparse side holds, e.g. "['addition']"
    # (or "('lstm', 'gru')" for a tuple field); show the value(s) as every other flag does
    try:
        value = ast.literal_eval(label)
    except (ValueError, SyntaxError):
        return f"(default: {label})"
    if isinstance(value, (list, tuple)):
        return f"(default: {' '.join(map(str, value))})"
    return f"(default: {value})"


def choice(names: Callable[[], Sequence[str]], *, many: bool = False, **arg: Any):
    """A ``tyro.conf.arg`` for a field whose values are ``names()`` (read at parse time); ``many``: a tuple of them.
    ``arg``: further ``tyro.conf.arg`` options (aliases, ...)."""

    def literal():
        one = Literal[tuple(names())]  # type: ignore[misc]
        return tuple[one, ...] if many else one

    return tyro.conf.arg(constructor_factory=literal, help_behavior_hint=_default_hint, **arg)


def device_names() -> list[str]:
    """auto, cpu, cuda, and cuda:i for each GPU present."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ["auto", "cpu", "cuda", *(f"cuda:{i}" for i in range(gpus))]
