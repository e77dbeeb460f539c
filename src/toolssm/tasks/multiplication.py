"""n×1 and n×2 multiplication with pointer memory (paper §3.2), with a local-policy trajectory.

Input ``a*b=`` (character tokens); ``b`` has one digit ("multiplication-x1") or one or two
("multiplication-x2": n2 ~ U{1,2}, as in the paper). The paper's algorithm, with one pointer per loop
(docs/design.md, "local policy"; the format and its reasons are in docs/tasks/multiplication.md):

1. p1 walks right to ``*`` and steps back onto a's least significant digit (LSD);
   p2 walks right to ``=`` and steps back onto b's LSD.
2. Row loop (partial product a × b_j), with the row's own pointer q (p1 for b's LSD, p4 for its next
   digit): read q, read p2, write the product digit and a carry token ``c0``..``c8`` as thoughts, move q
   left if it read a digit. A non-digit counts as 0; when q reads a non-digit and the carry is 0 the row
   is done. The product comes out least significant digit first, every digit followed by its carry.
3. After a row: p2 steps left and reads. A digit means another row: write ``+ 0 c0`` (separator and the
   shift zero), walk p4 from the start to ``*``, step left, and run the row loop with p4. ``*`` means the
   rows are done: after one row (its pointer was p1) write ``[ANS]``; after two (p4) write ``=`` and add.
4. Addition of the two rows (written reversed): p5 walks to the input's ``=`` and steps right onto row 1,
   p6 walks to ``+`` and steps right onto row 2. Loop: read p5, read p6, write the sum digit and ``c0``/
   ``c1``, move each pointer that read a digit two steps right (over the carry token). When p5 reads
   ``+`` and p6 reads ``=`` and the carry is 0, write ``[ANS]``.
5. Read-back with p3: walk right to ``[ANS]``, then left: carry tokens are skipped, digits are output,
   except zeros before the first non-zero digit (a product by 0); at ``=`` output ``0`` if nothing was
   output, then ``[EOS]``.

Every decision is a function of the last 9 tokens (tested): the pointer id says which loop we are in,
the observation says whether it ends, the carry was written one iteration back.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import ClassVar

from toolssm.protocol import ANS, Episode
from toolssm.tasks.addition import DIGITS, random_number, read_back
from toolssm.tasks.base import Task, Verdict, register
from toolssm.tools.pointer import PointerMemory, command, walk_right

_DIGIT_SET = frozenset(DIGITS)
CARRY = tuple(f"c{k}" for k in range(9))  # 9 * 9 + 8 = 89: a row's carry is at most 8
TIMES = "*"
_PROBLEM = re.compile(r"^\s*(\d+)\s*[*x×]\s*(\d+)\s*=?\s*$", re.ASCII)


@dataclass(frozen=True)
class MultiplicationProblem:
    a: str  # decimal digits, no leading zeros (except "0")
    b: str  # one or two digits


def mul_decimal(a: str, b: str) -> str:
    """Schoolbook product of two decimal strings (Python ints refuse to print past 4,300 digits)."""
    acc = [0] * (len(a) + len(b))  # little-endian column sums
    for i, x in enumerate(reversed(a)):
        for j, y in enumerate(reversed(b)):
            acc[i + j] += (ord(x) - 48) * (ord(y) - 48)
    out, carry = [], 0
    for s in acc:
        carry, d = divmod(s + carry, 10)
        out.append(chr(48 + d))
    return "".join(reversed(out)).lstrip("0") or "0"


def _p(k: int):
    return lambda op: command(k, op)


class Multiplication(Task):
    """n × m multiplication, m <= ``max_b`` digits. Subclasses fix ``max_b`` and register."""

    replay_spec = "10000"

    max_b: ClassVar[int]
    symbols = (*DIGITS, TIMES, "=", "+", *CARRY)
    input_in_context = False  # the pointers read the input from memory; the model starts from [BOS]

    def make_tool(self) -> PointerMemory:
        return PointerMemory(n_pointers=3 if self.max_b == 1 else 6)

    def sample(self, rng: random.Random, max_size: int) -> MultiplicationProblem:
        # the paper's training distribution: n1 ~ U{1..n}, n2 ~ U{1,2} (n2 = 1 for n×1)
        n1, n2 = rng.randint(1, max_size), rng.randint(1, self.max_b)
        return MultiplicationProblem(random_number(rng, n1), random_number(rng, n2))

    def parse_spec(self, spec: str) -> int:
        """``"N"`` (an N-digit first operand, a ``max_b``-digit second) or ``"NxK"`` (K digits)."""
        n, sep, k = spec.partition("x")
        if sep and not (k.isdigit() and 1 <= int(k) <= self.max_b):
            raise ValueError(f"bad size {spec!r} for task {self.name}: expected N or NxK with K in 1..{self.max_b}")
        return self.spec_part(n, spec, "N or NxK")

    def sample_eval(self, rng: random.Random, spec: str) -> MultiplicationProblem:
        n = self.parse_spec(spec)
        k = int(spec.partition("x")[2] or self.max_b)
        return MultiplicationProblem(random_number(rng, n), random_number(rng, k))

    def parse(self, text: str) -> MultiplicationProblem:
        m = _PROBLEM.match(text)
        if not m:
            raise ValueError(f"bad multiplication problem {text!r}: expected digits*digits, e.g. 12345*67")
        a, b = m.group(1).lstrip("0") or "0", m.group(2).lstrip("0") or "0"
        if len(b) > self.max_b:
            raise ValueError(f"bad problem {text!r} for {self.name}: at most {self.max_b} digit(s) after the *")
        return MultiplicationProblem(a, b)

    def input_tokens(self, problem: MultiplicationProblem) -> list[str]:
        return [*problem.a, TIMES, *problem.b, "="]

    def size(self, problem: MultiplicationProblem) -> int:
        return len(problem.a)

    def token_budget(self, problem: MultiplicationProblem) -> int:
        # the expert uses about 30 tokens per digit of a for n×1, 74 for n×2; allow about twice that
        return (64 if len(problem.b) == 1 else 160) * len(problem.a) + 256

    def expert(self, problem: MultiplicationProblem, episode: Episode) -> None:
        act = episode.act
        p1, p2, p3, p4, p5, p6 = (_p(k) for k in range(1, 7))

        # 1. p1 onto a's LSD, p2 onto b's LSD
        walk_right(act, 1, TIMES)
        act(p1("left"))
        walk_right(act, 2, "=")
        act(p2("left"))
        # 2-3. one row per digit of b, each with its own pointer over a
        q = p1
        while True:
            carry = 0
            while True:
                x, y = act(q("read"))[0], act(p2("read"))[0]
                dx = x in _DIGIT_SET
                if not dx and carry == 0:
                    break
                v = (int(x) if dx else 0) * int(y) + carry
                carry = v // 10
                act(str(v % 10), CARRY[carry])
                if dx:
                    act(q("left"))
            if act(p2("left"), p2("read"))[0] == TIMES:
                break
            if q is p4:
                raise ValueError("the expert multiplies by at most two digits")
            act("+", "0", CARRY[0])
            q = p4
            walk_right(act, 4, TIMES)
            act(p4("left"))
        if q is p1:  # one row: it is the product
            act(ANS)
        else:  # 4. add the two rows, least significant digit first
            act("=")
            walk_right(act, 5, "=")
            act(p5("right"))
            walk_right(act, 6, "+")
            act(p6("right"))
            carry = 0
            while True:
                x, y = act(p5("read"))[0], act(p6("read"))[0]
                dx, dy = x in _DIGIT_SET, y in _DIGIT_SET
                if not dx and not dy and carry == 0:
                    act(ANS)
                    break
                s = (int(x) if dx else 0) + (int(y) if dy else 0) + carry
                carry = s // 10
                act(str(s % 10), CARRY[carry])
                if dx:
                    act(p5("right"), p5("right"))
                if dy:
                    act(p6("right"), p6("right"))
        # 5. read the product back, most significant digit first, without leading zeros
        read_back(act, 3, strip_zeros=True)

    def verify(self, problem: MultiplicationProblem, episode: Episode) -> Verdict:
        expected = mul_decimal(problem.a, problem.b)
        got = "".join(episode.output)
        return Verdict(got == expected, expected, got)


@register
class MultiplicationX1(Multiplication):
    name = "multiplication-x1"
    max_b = 1


@register
class MultiplicationX2(Multiplication):
    name = "multiplication-x2"
    max_b = 2
