"""Multi-digit subtraction a - b (a >= b) with pointer memory: a task the paper did not have.

Input ``a-b=``. Three pointers, one per loop (docs/design.md, "local policy"):

1. p1 walks right to ``-`` and steps back onto a's least significant digit (LSD).
2. p2 walks right to ``=`` and steps back onto b's LSD.
3. Subtract: read p1, read p2, write the difference digit and a borrow token (``b0``/``b1``) as thoughts,
   then move left every pointer that read a digit (a non-digit counts as 0 and stays). When both read
   non-digits, write ``[ANS]`` (with a >= b the borrow is 0 by then).
4. Read-back: p3 walks right to ``[ANS]``, then left: a borrow token is skipped, a digit is output
   unless it is a zero before the first non-zero digit (1000-999 has three leading zeros), and ``=``
   ends the episode, after a ``0`` if nothing was output (7-7).

The borrow sits one iteration back and "has a digit been output yet" is visible in the previous
read-back iteration, so every decision is a function of the last 8 tokens (tested).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from toolssm.protocol import ANS, Episode
from toolssm.tasks.addition import DIGITS, random_number, read_back
from toolssm.tasks.base import Task, Verdict, register
from toolssm.tools.pointer import PointerMemory, command, walk_right

_DIGIT_SET = frozenset(DIGITS)
BORROW = ("b0", "b1")
_PROBLEM = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*=?\s*$", re.ASCII)


@dataclass(frozen=True)
class SubtractionProblem:
    a: str  # decimal digits, no leading zeros (except "0"); a >= b
    b: str


def less(a: str, b: str) -> bool:
    """a < b for decimal strings without leading zeros."""
    return (len(a), a) < (len(b), b)


def sub_decimal(a: str, b: str) -> str:
    """Schoolbook a - b for a >= b, on digit strings (Python ints refuse to print past 4,300 digits)."""
    out, borrow, j = [], 0, len(b) - 1
    for i in range(len(a) - 1, -1, -1):
        d = ord(a[i]) - 48 - borrow - (ord(b[j]) - 48 if j >= 0 else 0)
        borrow = int(d < 0)
        out.append(chr(48 + d + 10 * borrow))
        j -= 1
    return "".join(reversed(out)).lstrip("0") or "0"


def _ordered(a: str, b: str) -> SubtractionProblem:
    return SubtractionProblem(b, a) if less(a, b) else SubtractionProblem(a, b)


@register
class Subtraction(Task):
    name = "subtraction"
    replay_spec = "10000"
    symbols = (*DIGITS, "-", "=", *BORROW)
    input_in_context = False  # the pointers read the input from memory; the model starts from [BOS]

    def make_tool(self) -> PointerMemory:
        return PointerMemory(n_pointers=3)

    def sample(self, rng: random.Random, max_size: int) -> SubtractionProblem:
        # as for addition: n1, n2 ~ U{1..n} independently, then the larger number goes first
        n1, n2 = rng.randint(1, max_size), rng.randint(1, max_size)
        return _ordered(random_number(rng, n1), random_number(rng, n2))

    def parse_spec(self, spec: str) -> int:
        """``"N"`` (two N-digit operands) or ``"N1-N2"`` (operands of N1 >= N2 digits)."""
        parts = [self.spec_part(p, spec, "N or N1-N2") for p in spec.split("-", 1)]
        if len(parts) == 2 and parts[0] < parts[1]:
            raise ValueError(f"bad size {spec!r} for task subtraction: N1-N2 needs N1 >= N2")
        return parts[0]

    def sample_eval(self, rng: random.Random, spec: str) -> SubtractionProblem:
        self.parse_spec(spec)
        n1, _, n2 = spec.partition("-")
        return _ordered(random_number(rng, int(n1)), random_number(rng, int(n2 or n1)))

    def parse(self, text: str) -> SubtractionProblem:
        m = _PROBLEM.match(text)
        if not m:
            raise ValueError(f"bad subtraction problem {text!r}: expected digits-digits, e.g. 4567-123")
        a, b = m.group(1).lstrip("0") or "0", m.group(2).lstrip("0") or "0"
        if less(a, b):
            raise ValueError(f"bad subtraction problem {text!r}: the first number must not be smaller")
        return SubtractionProblem(a, b)

    def input_tokens(self, problem: SubtractionProblem) -> list[str]:
        return [*problem.a, "-", *problem.b, "="]

    def size(self, problem: SubtractionProblem) -> int:
        return len(problem.a)

    def token_budget(self, problem: SubtractionProblem) -> int:
        # the expert uses about 38 tokens per digit with two N-digit operands; allow twice that
        return 40 * (len(problem.a) + len(problem.b)) + 256

    def expert(self, problem: SubtractionProblem, episode: Episode) -> None:
        p1, p2, p3 = (lambda op, k=k: command(k, op) for k in (1, 2, 3))
        act = episode.act
        # 1-2. p1 onto a's LSD, p2 onto b's LSD
        walk_right(act, 1, "-")
        act(p1("left"))
        walk_right(act, 2, "=")
        act(p2("left"))
        # 3. subtract, least significant digit first
        borrow = 0
        while True:
            x, y = act(p1("read"))[0], act(p2("read"))[0]
            dx, dy = x in _DIGIT_SET, y in _DIGIT_SET
            if not dx and not dy and borrow == 0:
                act(ANS)
                break
            d = (int(x) if dx else 0) - (int(y) if dy else 0) - borrow
            borrow = int(d < 0)
            act(str(d + 10 * borrow), BORROW[borrow])
            if dx:
                act(p1("left"))
            if dy:
                act(p2("left"))
        # 4. read the difference back, most significant digit first, without leading zeros
        read_back(act, 3, strip_zeros=True)

    def verify(self, problem: SubtractionProblem, episode: Episode) -> Verdict:
        expected = sub_decimal(problem.a, problem.b)
        got = "".join(episode.output)
        return Verdict(got == expected, expected, got)
