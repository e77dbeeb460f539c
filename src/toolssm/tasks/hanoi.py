"""Tower of Hanoi with pointer memory (paper §3.2, App. D.3-D.4): three trajectories, one verifier.

n disks with distinct sizes from 1..100 sit on rod A, largest at the bottom; the input lists them bottom to
top, ``(7)(5)(2)``. **Each disk is one token** (``(1)`` .. ``(100)``), so the text is exactly the
paper's. The answer is a sequence of legal moves taking the pile to rod C, each move written
``(5)AC$`` (disk 5 from A to C, ``$`` ends the move). Rods are the tokens ``A B C``.

Three tasks (see docs/tasks/hanoi.md for full trajectories and token counts):

``hanoi`` (iterative, local policy; the default)
    Two pointers. Every move is followed by the full new state, written **one pair per disk, smallest
    disk first** with a header: ``+o (2)C (5)A (7)A ;``. The header says which way the smallest disk
    cycles (``+`` A->B->C->A when n is even, ``-`` A->C->B->A when n is odd) and whether the next move is
    the smallest disk's (``s``) or another's (``o``). With that order both iterative rules are read off the
    front of the state: the smallest disk moves one step along its cycle; the other move takes **the
    first disk whose rod differs from the rod of the disks before it** (the smallest disk not on the
    smallest disk's rod) to the third rod. Per iteration:

    1. *scout*: p2 walks the state from its header to that disk (``;`` here means all disks share one rod:
       solved, ``[EOS]``); the move is written;
    2. *copy the prefix*: p1 copies the header (flipping s/o) and the pairs up to the moved disk, changing
       its rod; p1 and p2 now stand together after it;
    3. *copy the rest*: p2 reads, both pointers step (lockstep) until ``;``;
    4. *skip*: p1 reads, both step, over the move just written, to the next header.

    The pointer id in the last command says which phase we are in, and every rod to write is a function
    of the last two rods read and the header; nothing is counted or carried across a copy. A prologue
    walks rod A from its base writing each disk's first destination (``C B C B ...``: the paper's parity
    walk), then writes the start state ``-s (2)A (5)A (7)A ;`` (thoughts), then ``[ANS]``.

``hanoi-paper`` (iterative, the paper's one-pointer scheme)
    One pointer; states ``A(7)(5)B(2)C;`` (rods bottom to top, ``;`` ends a state). The parity walk
    emits ``B C B C ...``; the pointer rewinds; then: write the next move, copy the previous state with
    the one change, read past the move to the new state. The model must remember the move through the
    whole copy and read the next move off tops it saw during the previous copy: kept for comparison.

``hanoi-recursive`` (the paper's Table 2, three pointers)
    Move lists for 1, 2, ..., n smallest disks, each ended by ``#`` (an empty list ``#`` starts memory).
    For i disks: p2 copies list i-1 with B and C swapped, the middle move of disk i (under p1) ``(d)AC$``
    is written, p3 copies list i-1 with A and B swapped. The paper copies twice with one pointer (p2);
    the second copy then needs a rewind, and the swap in force would have to be remembered across a copy
    of 2^i tokens, so each copy gets its own pointer. Before each list p1 peeks at the next larger disk:
    ``[EDGE]`` means this is the last list, so ``[ANS]`` comes first and the output is exactly the
    solution ``... #``.

The verifier (shared) parses the output stream by the task's grammar, replays the moves on real rods and
reports legality, whether the pile ends on C, optimality (2^n - 1 moves; a legal solution of that length
is the unique optimal one), whether every written state is the true one, and partial credit (the
fraction of the optimal solution reproduced as a prefix).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from toolssm.protocol import ANS, EOS, Episode
from toolssm.tasks.base import Task, Verdict, register
from toolssm.tools.pointer import EDGE, PointerMemory, command

MAX_DISK = 100
DISKS = tuple(f"({i})" for i in range(1, MAX_DISK + 1))
_DISK_SET = frozenset(DISKS)
RODS = ("A", "B", "C")
MOVE_END, STATE_END, LIST_END = "$", ";", "#"
HEADERS = ("+s", "-s", "+o", "-o")
_HEADER_SET = frozenset(HEADERS)
_NEXT = {"+": {"A": "B", "B": "C", "C": "A"}, "-": {"A": "C", "C": "B", "B": "A"}}
SWAP_BC = {"B": "C", "C": "B"}
SWAP_AB = {"A": "B", "B": "A"}

Move = tuple[int, str, str]  # (disk size, from rod, to rod)


def disk(size: int) -> str:
    return f"({size})"


def size_of(token: str) -> int:
    return int(token[1:-1])


def third(x: str, y: str) -> str:
    """The rod that is neither x nor y."""
    return ({"A", "B", "C"} - {x, y}).pop()


def cycle_from(src: str, first: str) -> str:
    """Which way the smallest disk cycles (``+`` A->B->C->A, ``-`` A->C->B->A) if its first move is src->first."""
    return "+" if _NEXT["+"][src] == first else "-"


def cycle_of(n: int, src: str, dst: str) -> str:
    """The smallest of n disks' cycle moving the pile src to dst: it goes first to dst when n is odd and to
    the third rod when n is even."""
    return cycle_from(src, dst if n % 2 else third(src, dst))


def flip(header: str) -> str:
    return header[0] + ("o" if header[1] == "s" else "s")


@dataclass(frozen=True)
class HanoiProblem:
    disks: tuple[int, ...]  # bottom to top: strictly decreasing sizes
    src: str = "A"  # the rod the pile starts on
    dst: str = "C"  # the rod it must end on (``hanoi`` trains on all six (src, dst); the paper's is A, C)


def optimal_moves(disks: Sequence[int], src: str = "A", dst: str = "C") -> list[Move]:
    """The unique shortest solution moving the pile from src to dst (iterative, no recursion limit)."""
    out: list[Move] = []
    stack: list[tuple[int, str, str, str, bool]] = [(len(disks), src, dst, third(src, dst), False)]
    while stack:
        k, src, dst, via, expanded = stack.pop()
        if k == 0:
            continue
        if expanded:
            out.append((disks[len(disks) - k], src, dst))
            continue
        # solve(k-1, src->via), move disk k, solve(k-1, via->dst); pushed in reverse
        stack.append((k - 1, via, dst, src, False))
        stack.append((k, src, dst, via, True))
        stack.append((k - 1, src, via, dst, False))
    return out


def local_state_tokens(rods: dict[str, list[int]], header: str) -> list[str]:
    """The ``hanoi`` state: header, one ``(size) rod`` pair per disk, smallest first, then ``;``."""
    where = sorted((d, r) for r, ds in rods.items() for d in ds)
    out = [header]
    for d, r in where:
        out += [disk(d), r]
    out.append(STATE_END)
    return out


def paper_state_tokens(rods: dict[str, list[int]]) -> list[str]:
    """The ``hanoi-paper`` state: ``A`` and its disks bottom to top, then ``B``..., ``C``..., then ``;``."""
    out: list[str] = []
    for r in RODS:
        out.append(r)
        out += [disk(d) for d in rods[r]]
    out.append(STATE_END)
    return out


@dataclass(frozen=True)
class HanoiVerdict(Verdict):
    """`Verdict` plus the replay: ``correct`` = well_formed and states_ok and legal and solved and optimal."""

    well_formed: bool = False  # the output follows the task's grammar to its end
    states_ok: bool = True  # every state written after a legal move is the true state
    legal: bool = False  # every move is legal
    solved: bool = False  # the moves end with all disks on C
    optimal: bool = False  # legal, solved, in 2^n - 1 moves
    n_moves: int = 0
    first_illegal: int | None = None  # index of the first illegal move
    optimal_prefix: int = 0  # leading moves equal to the optimal solution
    partial: float = 0.0  # optimal_prefix / (2^n - 1)


class _Hanoi(Task):
    """What the three Hanoi tasks share: problems, tokens, the verifier."""

    replay_spec = "12"  # 4,095 moves

    variant: str  # "local", "paper", "recursive"
    n_pointers: int
    named_rods = False  # the input names the source and target rods after the disks: ``(7)(5)(2) A C``
    relabel = False  # training problems move the pile between two random rods (named_rods only)

    def make_tool(self) -> PointerMemory:
        return PointerMemory(n_pointers=self.n_pointers)

    # -- problems -----------------------------------------------------------------------------------
    @staticmethod
    def random_problem(rng: random.Random, n: int, src: str = "A", dst: str = "C") -> HanoiProblem:
        return HanoiProblem(tuple(sorted(rng.sample(range(1, MAX_DISK + 1), n), reverse=True)), src, dst)

    def sample(self, rng: random.Random, max_size: int) -> HanoiProblem:
        n = rng.randint(1, max(1, min(max_size, MAX_DISK)))
        src, dst = rng.sample(RODS, 2) if self.relabel else ("A", "C")
        return self.random_problem(rng, n, src, dst)

    def parse_spec(self, spec: str) -> int:
        n = super().parse_spec(spec)
        if n > MAX_DISK:
            raise ValueError(f"bad size {spec!r} for task {self.name}: at most {MAX_DISK} disks")
        return n

    def sample_eval(self, rng: random.Random, spec: str) -> HanoiProblem:
        """The paper's problem at that size: the pile goes from A to C."""
        return self.random_problem(rng, self.parse_spec(spec))

    def parse(self, text: str) -> HanoiProblem:
        """``(7)(5)(2)`` (or ``7 5 2``): distinct sizes in 1..100, bottom (largest) to top, moved from A to C;
        with named rods (``hanoi``), optionally followed by the source and target rods: ``(7)(5)(2) B A``."""
        t = text.strip()
        src, dst = "A", "C"
        if m := re.fullmatch(r"(.*?)\s*\b([ABC])\s*([ABC])", t, flags=re.S):
            if not self.named_rods:
                raise ValueError(f"bad Hanoi problem {text!r}: task {self.name} always moves the pile from A to C")
            t, src, dst = m.group(1), m.group(2), m.group(3)
            if src == dst:
                raise ValueError(f"bad Hanoi problem {text!r}: the source and target rods must differ")
        if re.fullmatch(r"(\s*\(\s*\d+\s*\)\s*)+", t, re.ASCII):
            sizes = [int(x) for x in re.findall(r"\d+", t, re.ASCII)]
        elif re.fullmatch(r"\d+([\s,]+\d+)*", t, re.ASCII):
            sizes = [int(x) for x in re.split(r"[\s,]+", t)]
        else:
            raise ValueError(f"bad Hanoi problem {text!r}: expected disk sizes bottom to top, e.g. (7)(5)(2)")
        if any(not 1 <= s <= MAX_DISK for s in sizes):
            raise ValueError(f"bad Hanoi problem {text!r}: disk sizes must be in 1..{MAX_DISK}")
        if any(a <= b for a, b in zip(sizes, sizes[1:])):
            raise ValueError(f"bad Hanoi problem {text!r}: sizes must be distinct and decrease bottom to top")
        return HanoiProblem(tuple(sizes), src, dst)

    def input_tokens(self, problem: HanoiProblem) -> list[str]:
        rods = [problem.src, problem.dst] if self.named_rods else []
        return [disk(d) for d in problem.disks] + rods

    def format(self, problem: HanoiProblem) -> str:
        rods = f" {problem.src} {problem.dst}" if self.named_rods else ""
        return "".join(disk(d) for d in problem.disks) + rods

    def size(self, problem: HanoiProblem) -> int:
        return len(problem.disks)

    def token_budget(self, problem: HanoiProblem) -> int:
        # about twice the expert's length (closed-form bound, so no expert run is needed)
        n = len(problem.disks)
        per_move = {"local": 12 * n + 60, "paper": 4 * n + 40, "recursive": 40}[self.variant]
        return 2 * ((2**n) * per_move + 24 * n + 64)

    # -- verifier -------------------------------------------------------------------------------------
    def _parse_output(self, output: Sequence[str]) -> tuple[list[Move], list[list[str] | None], bool]:
        """(moves, the state written after each move (None if absent), whether the grammar holds to the end)."""
        moves: list[Move] = []
        states: list[list[str] | None] = []
        i, n = 0, len(output)
        while i < n:
            if self.variant == "recursive" and output[i] == LIST_END:
                return moves, states, i == n - 1
            m = output[i : i + 4]
            if len(m) < 4 or m[0] not in _DISK_SET or m[1] not in RODS or m[2] not in RODS or m[3] != MOVE_END:
                return moves, states, False
            moves.append((size_of(m[0]), m[1], m[2]))
            i += 4
            if self.variant == "recursive":
                states.append(None)
                continue
            try:
                j = output.index(STATE_END, i)
            except ValueError:
                states.append(None)
                return moves, states, False
            states.append(list(output[i : j + 1]))
            i = j + 1
        return moves, states, self.variant != "recursive" and bool(moves)

    def verify(self, problem: HanoiProblem, episode: Episode) -> HanoiVerdict:
        output = episode.output
        n = len(problem.disks)
        n_opt = 2**n - 1
        moves, states, well_formed = self._parse_output(output)
        src, dst = problem.src, problem.dst
        rods: dict[str, list[int]] = {r: [] for r in RODS}
        rods[src] = list(problem.disks)
        first_illegal: int | None = None
        states_ok = True
        direction = cycle_of(n, src, dst)
        for k, (d, x, y) in enumerate(moves):
            if x == y or not rods[x] or rods[x][-1] != d or (rods[y] and rods[y][-1] < d):
                first_illegal = k
                break
            rods[y].append(rods[x].pop())
            st = states[k]
            if self.variant == "local":
                header = direction + ("o" if k % 2 == 0 else "s")
                states_ok &= st == local_state_tokens(rods, header)
            elif self.variant == "paper":
                states_ok &= st == paper_state_tokens(rods)
        legal = first_illegal is None
        solved = legal and len(rods[dst]) == n
        optimal = solved and len(moves) == n_opt
        opt = optimal_moves(problem.disks, src, dst)
        prefix = 0
        for a, b in zip(moves, opt):
            if a != b:
                break
            prefix += 1
        correct = well_formed and states_ok and optimal
        expected = f"{n_opt} legal moves taking {n} disks from {src} to {dst}"
        if not legal:
            d, x, y = moves[first_illegal]  # type: ignore[index]
            got = f"illegal move {first_illegal + 1} of {len(moves)}: {disk(d)}{x}{y}$"  # type: ignore[operator]
        else:
            got = f"{len(moves)} legal moves, {'solved' if solved else 'not solved'}"
        if not well_formed:
            got += " (malformed output)"
        elif not states_ok:
            got += " (a written state is wrong)"
        return HanoiVerdict(
            correct, expected, got, well_formed=well_formed, states_ok=states_ok, legal=legal, solved=solved,
            optimal=optimal, n_moves=len(moves), first_illegal=first_illegal, optimal_prefix=prefix,
            partial=prefix / n_opt,
        )  # fmt: skip


def _pointers(k: int) -> Iterator:
    return (lambda op, j=j: command(j, op) for j in range(1, k + 1))


@register
class Hanoi(_Hanoi):
    name = "hanoi"
    variant = "local"
    n_pointers = 2
    named_rods = True
    relabel = True
    symbols = (*DISKS, *RODS, MOVE_END, STATE_END, *HEADERS)

    def expert(self, problem: HanoiProblem, episode: Episode) -> None:
        p1, p2 = _pointers(2)
        act = episode.act
        # prologue 1: walk the pile from its base, writing each disk's first destination in the frame of
        # the paper's problem (C for the target, B for the spare): C, B, C, B, ...
        act(p1("init"))
        last = "B"
        while (src := act(p1("read"))[0]) in _DISK_SET:
            last = "C" if last == "B" else "B"
            act(last)
            act(p1("right"))
        # the walk ends on the source rod named after the disks; the target follows it. The last letter
        # is the smallest disk's first destination (C: the target, B: the spare), hence its cycle
        act(p1("right"))
        dst = act(p1("read"))[0]
        act(cycle_from(src, dst if last == "C" else third(src, dst)) + "s")
        # prologue 2: the start state, smallest disk first, walking back down the pile
        act(p1("left"), p1("left"))
        while (t := act(p1("read"))[0]) in _DISK_SET:
            act(t, src)
            act(p1("left"))
        act(STATE_END, ANS)
        # prologue 3: both pointers onto the start state's header
        act(p1("right"), p2("init"))

        def skip() -> str:
            while (t := act(p1("read"))[0]) not in _HEADER_SET:
                act(p1("right"), p2("right"))
            return t

        header = skip()
        while True:
            # 1. scout with p2 to the disk that moves next
            act(p2("right"))
            s = act(p2("read"))[0]
            act(p2("right"))
            rod = act(p2("read"))[0]
            if header[1] == "s":  # the smallest disk steps along its cycle
                move = (s, rod, _NEXT[header[0]][rod])
            else:  # the first disk not on the smallest disk's rod goes to the third rod
                while True:
                    act(p2("right"))
                    t = act(p2("read"))[0]
                    if t == STATE_END:  # every disk on one rod (C): solved
                        act(EOS)
                        return
                    prev = rod
                    act(p2("right"))
                    rod = act(p2("read"))[0]
                    if rod != prev:
                        move = (t, rod, third(rod, prev))
                        break
            act(p2("right"))
            act(*move, MOVE_END)
            # 2. copy the header and the pairs up to the moved disk with p1
            act(flip(act(p1("read"))[0]), p1("right"))
            prev = None
            while True:
                act(act(p1("read"))[0], p1("right"))
                rod = act(p1("read"))[0]
                if header[1] == "s" and prev is None:
                    act(_NEXT[header[0]][rod], p1("right"))
                    break
                if prev is not None and rod != prev:
                    act(third(rod, prev), p1("right"))
                    break
                act(rod, p1("right"))
                prev = rod
            # 3. copy the rest with p2, p1 in lockstep
            while True:
                t = act(p2("read"))[0]
                act(t, p2("right"), p1("right"))
                if t == STATE_END:
                    break
            # 4. skip the move just written, to the new state's header
            header = skip()


@register
class HanoiFixed(Hanoi):
    """``hanoi`` trained on the paper's problem only (A to C): the control for rod relabelling."""

    name = "hanoi-fixed"
    relabel = False


@register
class HanoiPaper(_Hanoi):
    name = "hanoi-paper"
    variant = "paper"
    n_pointers = 1
    symbols = (*DISKS, *RODS, MOVE_END, STATE_END)

    def expert(self, problem: HanoiProblem, episode: Episode) -> None:
        (p1,) = _pointers(1)
        act = episode.act
        # parity walk: B, C, B, C, ... along rod A from its base
        act(p1("init"))
        last, top = "C", None
        while (t := act(p1("read"))[0]) in _DISK_SET:
            top = t
            last = "B" if last == "C" else "C"
            act(last)
            act(p1("right"))
        # rewind to the start of the current state (the input)
        act(p1("left"))
        while act(p1("read"))[0] != EDGE:
            act(p1("left"))
        act(p1("right"), ANS)
        direction = "-" if last == "B" else "+"  # n odd: the smallest disk goes A->C first
        smallest = size_of(top)  # type: ignore[arg-type]
        # the state as the model would have to remember it from what it copied
        rods: dict[str, list[int]] = {"A": [size_of(t) for t in self.input_tokens(problem)], "B": [], "C": []}
        k = 0
        while True:
            if len(rods["C"]) == len(problem.disks):
                act(EOS)
                return
            # the next move: odd moves cycle the smallest disk, even ones the only other legal move
            if k % 2 == 0:
                x = next(r for r in RODS if rods[r] and rods[r][-1] == smallest)
                move = (smallest, x, _NEXT[direction][x])
            else:
                a, b = (r for r in RODS if not (rods[r] and rods[r][-1] == smallest))
                if not rods[a] or (rods[b] and rods[b][-1] < rods[a][-1]):
                    a, b = b, a
                move = (rods[a][-1], a, b)
            d, x, y = move
            act(disk(d), x, y, MOVE_END)
            # copy the previous state with the one change; the first state is the bare input (rod A)
            if k == 0:
                act("A")
                while (t := act(p1("read"))[0]) in _DISK_SET:
                    if t != disk(d):
                        act(t)
                    act(p1("right"))
                act("B", *([disk(d)] if y == "B" else []), "C", *([disk(d)] if y == "C" else []), STATE_END)
            else:
                cur = None
                while True:
                    t = act(p1("read"))[0]
                    if t in RODS or t == STATE_END:  # leaving rod `cur`: the moved disk lands on top of y
                        if cur == y:
                            act(disk(d))
                        act(t, p1("right"))
                        cur = t
                        if t == STATE_END:
                            break
                    else:
                        if t != disk(d):
                            act(t)
                        act(p1("right"))
            rods[y].append(rods[x].pop())
            # read past the move just written to the new state
            while act(p1("read"))[0] != MOVE_END:
                act(p1("right"))
            act(p1("right"))
            k += 1


@register
class HanoiRecursive(_Hanoi):
    name = "hanoi-recursive"
    variant = "recursive"
    n_pointers = 3
    symbols = (*DISKS, *RODS, MOVE_END, LIST_END)

    def expert(self, problem: HanoiProblem, episode: Episode) -> None:
        p1, p2, p3 = _pointers(3)
        act = episode.act
        act(LIST_END)  # the empty list for 0 disks
        # p1 onto the smallest disk (the top of rod A); p2 and p3 onto the empty list
        act(p1("init"))
        while act(p1("read"))[0] in _DISK_SET:
            act(p1("right"))
        act(p1("left"))
        for p in (p2, p3):
            act(p("init"))
            while act(p("read"))[0] != LIST_END:
                act(p("right"))
        while True:
            # peek at the next larger disk: none means this list is the answer
            act(p1("left"))
            if act(p1("read"))[0] == EDGE:
                act(ANS)
            act(p1("right"))
            # the previous list with B and C swapped (p2), the middle move (p1), with A and B swapped (p3)
            while (t := act(p2("read"))[0]) != LIST_END:
                act(SWAP_BC.get(t, t), p2("right"))
            act(p2("right"))
            act(act(p1("read"))[0], "A", "C", MOVE_END)
            while (t := act(p3("read"))[0]) != LIST_END:
                act(SWAP_AB.get(t, t), p3("right"))
            act(p3("right"), LIST_END)
            act(p1("left"))
            if act(p1("read"))[0] == EDGE:
                act(EOS)
                return
