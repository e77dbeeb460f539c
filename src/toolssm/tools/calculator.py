"""A calculator: the single-turn tool of the paper's addition ablation (App. D.7, "one add(a,b) command").

Its memory is the input only (M_0 may depend on the input, paper §2.2); thoughts and outputs are not
recorded. One command token::

    [calc]   evaluate the input ``A op B =`` (op one of + - *)   -> the result's digits, one token each

The answer comes back as one multi-token observation, most significant digit first (``-`` first if
negative). Input that is not ``digits op digits [=]`` gets ``[ERR]``; the tool never raises on model input.
Arithmetic is done on digit strings: Python refuses to turn an int of more than 4,300 digits into a string.
"""

from __future__ import annotations

from collections.abc import Sequence

from toolssm.tools.base import ERR, Tool, register_tool

CALC = "[calc]"
_DIGITS = frozenset("0123456789")


def _add(a: str, b: str) -> str:
    out, carry, i, j = [], 0, len(a) - 1, len(b) - 1
    while i >= 0 or j >= 0 or carry:
        s = carry + (int(a[i]) if i >= 0 else 0) + (int(b[j]) if j >= 0 else 0)
        out.append(str(s % 10))
        carry, i, j = s // 10, i - 1, j - 1
    return "".join(reversed(out)).lstrip("0") or "0"


def _less(a: str, b: str) -> bool:
    return (len(a), a) < (len(b), b)  # both without leading zeros


def _sub(a: str, b: str) -> str:
    """a - b for a >= b."""
    out, borrow, j = [], 0, len(b) - 1
    for i in range(len(a) - 1, -1, -1):
        d = int(a[i]) - borrow - (int(b[j]) if j >= 0 else 0)
        borrow = d < 0
        out.append(str(d + 10 * borrow))
        j -= 1
    return "".join(reversed(out)).lstrip("0") or "0"


def _mul(a: str, b: str) -> str:
    acc = [0] * (len(a) + len(b))  # little-endian digit sums, then one carry pass
    for i, x in enumerate(reversed(a)):
        for j, y in enumerate(reversed(b)):
            acc[i + j] += int(x) * int(y)
    carry = 0
    for k in range(len(acc)):
        carry, acc[k] = divmod(acc[k] + carry, 10)
    return "".join(map(str, reversed(acc))).lstrip("0") or "0"


def calculate(a: str, op: str, b: str) -> str:
    """``a op b`` for decimal strings (no leading zeros needed)."""
    a, b = a.lstrip("0") or "0", b.lstrip("0") or "0"
    if op == "+":
        return _add(a, b)
    if op == "-":
        return _sub(a, b) if not _less(a, b) else "-" + _sub(b, a)
    if op == "*":
        return _mul(a, b)
    raise ValueError(f"unknown operator {op!r}")


@register_tool("calculator")
class Calculator(Tool):
    tokens = (CALC, "-", ERR)

    def __init__(self) -> None:
        self.memory: list[str] = []

    def reset(self, input_tokens: Sequence[str]) -> list[str]:
        self.memory = list(input_tokens)
        return []

    def accepts(self, token: str) -> bool:
        return token == CALC

    def step(self, command: str) -> list[str]:
        if command != CALC:
            return [ERR]
        toks = self.memory[:-1] if self.memory[-1:] == ["="] else self.memory
        ops = [i for i, t in enumerate(toks) if t in ("+", "-", "*")]
        if len(ops) != 1:
            return [ERR]
        a, op, b = toks[: ops[0]], toks[ops[0]], toks[ops[0] + 1 :]
        if not a or not b or not set(a) <= _DIGITS or not set(b) <= _DIGITS:
            return [ERR]
        return list(calculate("".join(a), op, "".join(b)))
