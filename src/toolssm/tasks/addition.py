"""Multi-digit addition with pointer memory (paper §3.1, App. D.3), with a local-policy trajectory.

Input ``a+b=``. Three pointers, one per loop (see docs/design.md, "local policy"):

1. p1 walks right to ``+`` and steps back onto a's least significant digit (LSD).
2. p2 walks right to ``=`` and steps back onto b's LSD.
3. Add: read p1, read p2, write the sum digit and a carry token (``c0``/``c1``) as thoughts, then move
   left every pointer that read a digit. A pointer that read a non-digit contributes 0 and stays. When
   both read non-digits and the carry is 0, write ``[ANS]``. A final carry 1 is written as ``1 c0``.
4. Read-back: p3 walks right to ``[ANS]``, then left: a carry token is skipped, a digit is output,
   ``=`` ends the episode with ``[EOS]``. The sum comes out most significant digit first.

Every decision depends on the last few tokens only: the pointer id in a command says which loop we are
in, the observation says when it ends, and the carry sits one iteration back. Nothing is counted.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from toolssm.protocol import ANS, EOS, Episode
from toolssm.tasks.base import Task, Verdict, register
from toolssm.tools.pointer import PointerMemory, command, walk_right

DIGITS = tuple("0123456789")
_DIGIT_SET = frozenset(DIGITS)
CARRY = ("c0", "c1")
_PROBLEM = re.compile(r"^\s*(\d+)\s*\+\s*(\d+)\s*=?\s*$", re.ASCII)


@dataclass(frozen=True)
class AdditionProblem:
    a: str  # decimal digits, no leading zeros (except "0")
    b: str


def random_number(rng: random.Random, n_digits: int) -> str:
    """A uniform ``n_digits``-digit number (a 1-digit number may be 0)."""
    if n_digits == 1:
        return str(rng.randrange(10))
    return str(rng.randrange(1, 10)) + "".join(rng.choice(DIGITS) for _ in range(n_digits - 1))


def add_decimal(a: str, b: str) -> str:
    """Schoolbook addition of two decimal strings. Python ints refuse to print past 4,300 digits."""
    out, carry = [], 0
    i, j = len(a) - 1, len(b) - 1
    while i >= 0 or j >= 0 or carry:
        s = carry + (ord(a[i]) - 48 if i >= 0 else 0) + (ord(b[j]) - 48 if j >= 0 else 0)
        out.append(chr(48 + s % 10))
        carry = s // 10
        i, j = i - 1, j - 1
    return "".join(reversed(out)).lstrip("0") or "0"


def read_back(act, pointer: int, *, strip_zeros: bool = False) -> None:
    """Expert phase shared by the arithmetic tasks: walk ``pointer`` right to ``[ANS]``, then left to ``=``,
    outputting every digit it reads (skipping carry/borrow tokens, and leading zeros if ``strip_zeros``,
    with ``0`` for an all-zero result), then ``[EOS]``."""
    walk_right(act, pointer, ANS)
    act(command(pointer, "left"))
    printed = False
    while (t := act(command(pointer, "read"))[0]) != "=":
        if t in _DIGIT_SET and (printed or t != "0" or not strip_zeros):
            act(t)
            printed = True
        act(command(pointer, "left"))
    if strip_zeros and not printed:
        act("0")
    act(EOS)


@register
class Addition(Task):
    name = "addition"
    replay_spec = "10000"
    symbols = (*DIGITS, "+", "=", *CARRY)
    input_in_context = False  # the pointers read the input from memory; the model starts from [BOS]

    def make_tool(self) -> PointerMemory:
        return PointerMemory(n_pointers=3)

    def sample(self, rng: random.Random, max_size: int) -> AdditionProblem:
        # the paper's training distribution: n1, n2 ~ U{1..n} independently
        n1, n2 = rng.randint(1, max_size), rng.randint(1, max_size)
        return AdditionProblem(random_number(rng, n1), random_number(rng, n2))

    def parse_spec(self, spec: str) -> int:
        """``"N"`` (two N-digit operands) or ``"N1+N2"`` (operands of N1 and N2 digits)."""
        parts = spec.split("+")
        if len(parts) > 2:
            raise ValueError(f"bad size {spec!r} for task addition: expected N or N1+N2")
        return max(self.spec_part(p, spec, "N or N1+N2") for p in parts)

    def sample_eval(self, rng: random.Random, spec: str) -> AdditionProblem:
        self.parse_spec(spec)
        n1, _, n2 = spec.partition("+")
        return AdditionProblem(random_number(rng, int(n1)), random_number(rng, int(n2 or n1)))

    def parse(self, text: str) -> AdditionProblem:
        m = _PROBLEM.match(text)
        if not m:
            raise ValueError(f"bad addition problem {text!r}: expected digits+digits, e.g. 123+4567")
        return AdditionProblem(m.group(1).lstrip("0") or "0", m.group(2).lstrip("0") or "0")

    def input_tokens(self, problem: AdditionProblem) -> list[str]:
        return [*problem.a, "+", *problem.b, "="]

    def size(self, problem: AdditionProblem) -> int:
        return max(len(problem.a), len(problem.b))

    def token_budget(self, problem: AdditionProblem) -> int:
        # the expert uses about 36 tokens per digit (18 per operand digit); allow over 3x that
        return 64 * (len(problem.a) + len(problem.b)) + 256

    def expert(self, problem: AdditionProblem, episode: Episode) -> None:
        p1, p2, p3 = (lambda op, k=k: command(k, op) for k in (1, 2, 3))
        act = episode.act
        # 1. p1 onto a's LSD
        walk_right(act, 1, "+")
        act(p1("left"))
        # 2. p2 onto b's LSD
        walk_right(act, 2, "=")
        act(p2("left"))
        # 3. add, least significant digit first
        carry = 0
        while True:
            x, y = act(p1("read"))[0], act(p2("read"))[0]
            dx, dy = x in _DIGIT_SET, y in _DIGIT_SET
            if not dx and not dy and carry == 0:
                act(ANS)
                break
            s = (int(x) if dx else 0) + (int(y) if dy else 0) + carry
            carry = s // 10
            act(str(s % 10), CARRY[carry])
            if dx:
                act(p1("left"))
            if dy:
                act(p2("left"))
        # 4. read the sum back, most significant digit first
        read_back(act, 3)

    def verify(self, problem: AdditionProblem, episode: Episode) -> Verdict:
        expected = add_decimal(problem.a, problem.b)
        got = "".join(episode.output)
        return Verdict(got == expected, expected, got)
