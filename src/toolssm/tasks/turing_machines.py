"""Turing machines as tool-use tasks: the machine format, the compiled traces, the table learner, and the
demonstration machines. The tm-* tasks (tasks/turing.py) and Theorem 2.2 (toolssm.theory.turing) both use them.

The paper (App. B.2) proves that tool use makes length generalization *learnable* for any task a Turing
machine (TM) solves. The pieces, each a function or class here:

- **A TM format** (`parse_machine`): a few lines of text, one transition per line (docs/theory.md)::

      machine increment        # optional name
      input 0 1                # input alphabet
      start right
      halt done
      right 0 -> right 0 R     # in state `right` reading 0: go to `right`, write 0, move right
      right _ -> carry _ L     # `_` is the blank; a blank cell reads [EOS] through the tape oracle

- **The tape oracle** is `toolssm.tools.tape.TapeMemory` (read, write, left, right; [EOS] past the end).
- **The compiler** (`compile_trace`) turns a TM and an input x into the proof's trajectory F(x): a
  state thought, then read / observation / write / move per TM step, then ``[ANS]`` and the read-back
  of the output. It simulates the TM itself; the replay test drives the real oracle with it.
- **The table learner** (`TableLearner`): Â is the set of (state, symbol) pairs seen in training traces,
  R maps each to (next state, write, move). Its policy (`TableLearner.drive`) is a GSSM: its state is the
  last state thought and the phase, finite for a fixed machine. It emits [EOS] on an unseen pair.
- **Demonstration machines** (`DEMOS`): binary increment, binary addition, palindrome check, unary to
  binary, each with its input distribution D_n and a ground truth f computed without the TM.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from toolssm.protocol import ANS, BOS, EOS, Episode, Role, Trajectory
from toolssm.tools.tape import BLANK, LEFT, READ, RIGHT, TapeMemory, write

MOVES = {"L": LEFT, "R": RIGHT}
_NAME = re.compile(r"^[A-Za-z0-9_.:\-]+$")


def state_token(q: str) -> str:
    """The state thought enc(q). The paper spells q in log|Q| bits between [STATE] tags; we use one token
    per state (docs/theory.md): it is as finite, and the trace is half as long."""
    return f"[q:{q}]"


# -- the machine format ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TuringMachine:
    """A deterministic single-tape TM. ``delta[(q, s)] = (q', s', move)``; ``s`` may be the blank ``_``.

    Convention (App. B.2, "w.l.o.g."): the head starts on cell 0 and the machine halts with its head on
    cell 0 and its output on cells 0, 1, ... up to the first blank."""

    name: str
    inputs: tuple[str, ...]
    start: str
    halt: str
    delta: dict[tuple[str, str], tuple[str, str, str]] = field(hash=False)

    @property
    def states(self) -> tuple[str, ...]:
        seen = dict.fromkeys([self.start])
        for (q, _), (q2, _, _) in self.delta.items():
            seen.setdefault(q)
            seen.setdefault(q2)
        seen.pop(self.halt, None)
        return (*seen, self.halt)

    @property
    def symbols(self) -> tuple[str, ...]:
        """The tape alphabet without the blank: input symbols, then every symbol read or written."""
        seen = dict.fromkeys(self.inputs)
        for (_, s), (_, s2, _) in self.delta.items():
            seen.setdefault(s)
            seen.setdefault(s2)
        seen.pop(BLANK, None)
        return tuple(seen)

    @property
    def n_pairs(self) -> int:
        """M = |Q|·|Σ| (Σ with the blank), the size of the table the learner may need (Lemma B.1)."""
        return len(self.states) * (len(self.symbols) + 1)

    def tool(self) -> TapeMemory:
        return TapeMemory(self.symbols)

    def tokens(self) -> tuple[str, ...]:
        """Every token of its traces that the tape oracle does not already own: state thoughts, symbols."""
        return (*(state_token(q) for q in self.states), *self.symbols)


def parse_machine(text: str) -> TuringMachine:
    """Read a TM from the text format (module docstring; docs/theory.md). One-line ValueError on bad input."""
    name, inputs, start, halt = "machine", None, None, None
    delta: dict[tuple[str, str], tuple[str, str, str]] = {}

    def bad(lineno: int, msg: str) -> ValueError:
        return ValueError(f"machine line {lineno}: {msg}")

    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        for w in words:
            if w != "->" and not _NAME.match(w):
                raise bad(lineno, f"bad name {w!r} (letters, digits and _ . : - only)")
        if "->" in words:
            if len(words) != 6 or words[2] != "->":
                raise bad(lineno, f"expected 'state symbol -> state symbol L|R', got {line!r}")
            q, s, _, q2, s2, d = words
            if d not in MOVES:
                raise bad(lineno, f"bad move {d!r}: expected L or R")
            if (q, s) in delta:
                raise bad(lineno, f"a second transition for ({q}, {s}): the machine must be deterministic")
            delta[(q, s)] = (q2, s2, d)
            continue
        key, args = words[0], words[1:]
        if key == "machine" and len(args) == 1:
            name = args[0]
        elif key == "input" and args:
            if BLANK in args:
                raise bad(lineno, f"the blank {BLANK!r} cannot be an input symbol")
            inputs = tuple(args)
        elif key in ("start", "halt") and len(args) == 1:
            if key == "start":
                start = args[0]
            else:
                halt = args[0]
        else:
            raise bad(lineno, f"unknown line {line!r} (machine NAME | input SYMBOLS | start STATE | halt STATE | transition)")
    if inputs is None or start is None or halt is None:
        raise ValueError("machine: missing " + ", ".join(k for k, v in (("input", inputs), ("start", start), ("halt", halt)) if v is None))
    if start == halt:
        raise ValueError("machine: the start state cannot be the halting state")
    if any(q == halt for q, _ in delta):
        raise ValueError(f"machine: the halting state {halt!r} cannot have transitions")
    if not any(q == start for q, _ in delta):
        raise ValueError(f"machine: the start state {start!r} has no transitions")
    return TuringMachine(name, inputs, start, halt, delta)


# -- running, compiling, replaying --------------------------------------------------------------------------


@dataclass
class Run:
    output: list[str]
    steps: int
    visited: set[tuple[str, str]]  # the pairs A(x) the machine visits, blank as "_"


def run(machine: TuringMachine, x: Sequence[str], *, max_steps: int = 50_000_000) -> Run:
    """Simulate ``machine`` on ``x``; ValueError if it gets stuck, runs past ``max_steps``, or halts with
    its head off cell 0."""
    cells = {i: s for i, s in enumerate(x)}
    delta, halt = machine.delta, machine.halt
    q, head, steps, visited = machine.start, 0, 0, set()
    while q != halt:
        s = cells.get(head, BLANK)
        visited.add((q, s))
        try:
            q, s2, d = delta[(q, s)]
        except KeyError:
            raise ValueError(f"{machine.name}: no transition for ({q}, {s})") from None
        if s2 == BLANK:
            cells.pop(head, None)
        else:
            cells[head] = s2
        head += 1 if d == "R" else -1
        steps += 1
        if steps > max_steps:
            raise ValueError(f"{machine.name}: no halt within {max_steps} steps")
    if head != 0:
        raise ValueError(f"{machine.name}: halted with the head on cell {head}, not 0")
    out, i = [], 0
    while i in cells:
        out.append(cells[i])
        i += 1
    return Run(out, steps, visited)


def compile_trace(machine: TuringMachine, x: Sequence[str]) -> Trajectory:
    """F(x), the proof's training trace, by simulating the TM (no tool involved)::

        [BOS]                                            input (x itself lives on the tape only)
        per step:   [q:state] [read] s [write:s'] [left]|[right]
        at halt:    [q:halt] [ANS]  then per output symbol  [read] s s [right]  and finally  [read] [EOS] [EOS]

    Roles: state thoughts and [ANS] are thoughts, [read]/[write:*]/moves are commands, what a read returns
    is an observation, the echoed symbols and the final [EOS] are outputs.
    """
    T, C, O, U = Role.THOUGHT, Role.COMMAND, Role.OBSERVATION, Role.OUTPUT
    toks: list[str] = [BOS]
    roles: list[Role] = [Role.INPUT]
    cells = {i: s for i, s in enumerate(x)}
    delta, halt = machine.delta, machine.halt
    writes = {s: write(s) for s in (*machine.symbols, BLANK)}
    qtok = {q: state_token(q) for q in machine.states}
    q, head = machine.start, 0
    step_roles = (T, C, O, C, C)
    while q != halt:
        s = cells.get(head, BLANK)
        try:
            q2, s2, d = delta[(q, s)]
        except KeyError:
            raise ValueError(f"{machine.name}: no transition for ({q}, {s})") from None
        toks += (qtok[q], READ, EOS if s == BLANK else s, writes[s2], MOVES[d])
        roles += step_roles
        if s2 == BLANK:
            cells.pop(head, None)
        else:
            cells[head] = s2
        head += 1 if d == "R" else -1
        q = q2
    if head != 0:
        raise ValueError(f"{machine.name}: halted with the head on cell {head}, not 0")
    toks += (qtok[halt], ANS)
    roles += (T, T)
    while head in cells:
        s = cells[head]
        toks += (READ, s, s, RIGHT)
        roles += (C, O, U, C)
        head += 1
    toks += (READ, EOS, EOS)
    roles += (C, O, U)
    return Trajectory(toks, roles)


def replay(machine: TuringMachine, x: Sequence[str], trace: Trajectory) -> list[str]:
    """Drive a fresh tape oracle (M_0 = x) with the trace's generated tokens; every observation the oracle
    returns must be the one the trace holds. Returns the output stream; ValueError at the first mismatch.
    (The same check as `Task.replay` without an `Episode`, so that a million-step trace replays in seconds.)"""
    tool = machine.tool()
    tool.reset(x)
    toks, roles = trace.tokens, trace.roles
    out: list[str] = []
    i, n = 0, len(toks)
    obs_role, cmd_role, out_role = Role.OBSERVATION, Role.COMMAND, Role.OUTPUT
    step = tool.step
    while i < n:
        role = roles[i]
        if role == cmd_role:
            obs = step(toks[i])
            if toks[i + 1 : i + 1 + len(obs)] != obs or any(r != obs_role for r in roles[i + 1 : i + 1 + len(obs)]):
                raise ValueError(f"trace and oracle disagree after token {i} ({toks[i]}): oracle says {obs}")
            i += 1 + len(obs)
            if i < n and roles[i] == obs_role:
                raise ValueError(f"trace has an observation at token {i} that the oracle did not give")
            continue
        if role == obs_role:
            raise ValueError(f"trace has an observation at token {i} that follows no command")
        if role == out_role and toks[i] != EOS:
            out.append(toks[i])
        i += 1
    return out


# -- the table learner (App. B.2) and Lemma B.1 ------------------------------------------------------------


class TableLearner:
    """h_{Â,R}: a lookup table from (state thought, observed symbol) to (next state, write, move).

    ``fit`` reads trajectories token by token: it never sees the machine. ``drive`` replays the table
    against a live episode and its tape oracle; on a pair outside Â it emits [EOS] (and so fails)."""

    def __init__(self) -> None:
        self.start: str | None = None
        self.halts: set[str] = set()
        self.table: dict[tuple[str, str], tuple[str, str, str]] = {}

    @property
    def covered(self) -> set[tuple[str, str]]:
        """Â, as (state token, observation token) pairs."""
        return set(self.table)

    def fit(self, traces: Iterable[Trajectory]) -> TableLearner:
        T, C, O = Role.THOUGHT, Role.COMMAND, Role.OBSERVATION
        step = [T, C, O, C, C, T]  # [q] [read] s [write:s'] move [q']
        for tr in traces:
            toks, roles = tr.tokens, tr.roles
            gen = [i for i, r in enumerate(roles) if r != Role.INPUT]
            if gen and self.start is None:
                self.start = toks[gen[0]]
            for i in range(len(toks) - 5):
                if toks[i + 1] == READ and roles[i : i + 6] == step:
                    key, val = (toks[i], toks[i + 2]), (toks[i + 5], toks[i + 3], toks[i + 4])
                    if self.table.setdefault(key, val) != val:
                        raise ValueError(f"traces disagree on {key}: {self.table[key]} vs {val}")
                elif roles[i] == Role.THOUGHT and toks[i + 1] == ANS:
                    self.halts.add(toks[i])
        return self

    @classmethod
    def from_machine(cls, machine: TuringMachine) -> TableLearner:
        """The learner with Â = every pair of the machine: its policy is the expert that writes F(x)."""
        h = cls()
        h.start, h.halts = state_token(machine.start), {state_token(machine.halt)}
        h.table = {
            (state_token(q), EOS if s == BLANK else s): (state_token(q2), write(s2), MOVES[d])
            for (q, s), (q2, s2, d) in machine.delta.items()
        }
        return h

    def forget(self, pair: tuple[str, str]) -> None:
        """Remove one pair from Â (to show what missing coverage does)."""
        self.table.pop(pair)

    def drive(self, episode: Episode) -> None:
        """Act in ``episode`` (already reset) until [EOS] or the token budget runs out."""

        def act(*tokens: str) -> list[str]:
            obs: list[str] = []
            for t in tokens:
                if episode.terminated or episode.truncated:
                    raise _Stop
                obs = episode.step(t).observation
            return obs

        try:
            self._policy(act)
        except _Stop:
            pass

    def _policy(self, act) -> None:
        q = self.start
        if q is None:
            act(EOS)
            return
        while True:
            act(q)
            if q in self.halts:  # the read-back: echo the tape from cell 0 up to the first blank
                act(ANS)
                while (s := act(READ)[0]) != EOS:
                    act(s, RIGHT)
                act(EOS)
                return
            s = act(READ)[0]
            nxt = self.table.get((q, s))
            if nxt is None:  # an unseen pair: the GSSM has no rule, it stops
                act(EOS)
                return
            q, w, d = nxt
            act(w, d)


class _Stop(Exception):
    """The episode's token budget ran out."""


# -- demonstration machines --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Demo:
    """A machine with its input distribution D_n, its ground truth f (computed without the TM), and a
    parser for user-given inputs."""

    machine: TuringMachine
    about: str
    sample: Callable[[random.Random, int], list[str]]
    truth: Callable[[Sequence[str]], list[str]]
    parse: Callable[[str], list[str]]


def _bits(rng: random.Random, n: int) -> list[str]:
    return [rng.choice("01") for _ in range(n)]


def _parse_bits(text: str) -> list[str]:
    t = text.strip()
    if not t or set(t) - set("01"):
        raise ValueError(f"bad input {text!r}: expected a binary string like 1011")
    return list(t)


INCREMENT = """\
machine increment            # x + 1 in binary, most significant bit first; keeps the width unless it overflows
input 0 1
start right
halt done
right 0 -> right 0 R         # walk to the end
right 1 -> right 1 R
right _ -> carry _ L
carry 1 -> carry 0 L         # 1 + carry = 0, carry on
carry 0 -> back 1 L          # 0 + carry = 1, done
carry _ -> over _ R          # carried off the left end: x was 11..1, now 00..0; the answer is 100..0
over 0 -> ext 1 R
ext 0 -> ext 0 R
ext _ -> back 0 L
back 0 -> back 0 L           # walk home to cell 0
back 1 -> back 1 L
back _ -> done _ R
"""

ADD = """\
machine add                  # a + b in binary; cell i holds the column "a_i b_i", most significant first
input 00 01 10 11
start scan
halt done
scan 00 -> scan 00 R         # walk to the end
scan 01 -> scan 01 R
scan 10 -> scan 10 R
scan 11 -> scan 11 R
scan _ -> c0 _ L
c0 00 -> c0 0 L              # add the column with carry 0 or 1, leftwards, overwriting it with the sum bit
c0 01 -> c0 1 L
c0 10 -> c0 1 L
c0 11 -> c1 0 L
c1 00 -> c0 1 L
c1 01 -> c1 0 L
c1 10 -> c1 0 L
c1 11 -> c1 1 L
c0 _ -> done _ R
c1 _ -> sh1 _ R              # a carry out of the top: shift the sum right by one cell, inserting a 1
sh1 0 -> sh0 1 R
sh1 1 -> sh1 1 R
sh0 0 -> sh0 0 R
sh0 1 -> sh1 0 R
sh0 _ -> back 0 L
sh1 _ -> back 1 L
back 0 -> back 0 L
back 1 -> back 1 L
back _ -> done _ R
"""

PALINDROME = """\
machine palindrome           # 1 if x reads the same backwards, else 0; O(n^2) steps
input 0 1
start start
halt done
start 0 -> have0 x R         # mark the leftmost unmatched symbol, remember it
start 1 -> have1 x R
start _ -> ryes _ L          # nothing left to match
have0 0 -> have0 0 R
have0 1 -> have0 1 R
have0 _ -> check0 _ L
have1 0 -> have1 0 R
have1 1 -> have1 1 R
have1 _ -> check1 _ L
check0 0 -> back _ L         # the rightmost symbol matches: erase it, go back
check0 1 -> rno _ L
check0 x -> ryes _ L         # it was the middle symbol
check1 1 -> back _ L
check1 0 -> rno _ L
check1 x -> ryes _ L
back 0 -> back 0 L
back 1 -> back 1 L
back x -> start x R
ryes x -> ryes _ L           # clean the tape leftwards (only marks are left), then write the verdict on cell 0
ryes _ -> wyes _ R
rno x -> rno _ L             # clean the marks and the unmatched middle
rno 0 -> rno _ L
rno 1 -> rno _ L
rno _ -> wno _ R
wyes _ -> fin 1 L
wno _ -> fin 0 L
fin _ -> done _ R
"""

UNARY = """\
machine unary                # 1^n -> n in binary, least significant bit first; O(n log n) steps
input 1
start p
halt done
# each pass crosses out every other unconsumed 1 (1 -> x), keeping floor(c/2) of c; the parity c mod 2 is
# the next bit, stored in the first cell without one (x -> x:b; that cell is always crossed out already:
# after pass j the uncrossed cells are at positions >= 2^j - 1). A pass that finds no 1 ends.
p 1 -> o x R
p x -> p x R
p x:0 -> p x:0 R
p x:1 -> p x:1 R
p _ -> fin _ L
o 1 -> e 1 R
o x -> o x R
o _ -> ret1 _ L
e 1 -> o x R
e x -> e x R
e _ -> ret0 _ L
ret0 1 -> ret0 1 L
ret0 x -> ret0 x L
ret0 x:0 -> ret0 x:0 L
ret0 x:1 -> ret0 x:1 L
ret0 _ -> slot0 _ R
ret1 1 -> ret1 1 L
ret1 x -> ret1 x L
ret1 x:0 -> ret1 x:0 L
ret1 x:1 -> ret1 x:1 L
ret1 _ -> slot1 _ R
slot0 x:0 -> slot0 x:0 R
slot0 x:1 -> slot0 x:1 R
slot0 x -> home x:0 L
slot1 x:0 -> slot1 x:0 R
slot1 x:1 -> slot1 x:1 R
slot1 x -> home x:1 L
home x:0 -> home x:0 L
home x:1 -> home x:1 L
home _ -> p _ R
fin x -> fin _ L             # done: erase the cells without a bit, turn x:b into b, walk home
fin x:0 -> fin 0 L
fin x:1 -> fin 1 L
fin _ -> done _ R
"""


def _add_sample(rng: random.Random, n: int) -> list[str]:
    return [rng.choice("01") + rng.choice("01") for _ in range(n)]


def _add_truth(x: Sequence[str]) -> list[str]:
    a, b = int("".join(c[0] for c in x), 2), int("".join(c[1] for c in x), 2)
    return list(format(a + b, f"0{len(x)}b"))


def _add_parse(text: str) -> list[str]:
    parts = text.replace(" ", "").split("+")
    if len(parts) != 2 or not all(parts) or set("".join(parts)) - set("01"):
        raise ValueError(f"bad input {text!r}: expected two binary numbers like 1011+110")
    n = max(map(len, parts))
    a, b = (p.zfill(n) for p in parts)
    return [i + j for i, j in zip(a, b)]


def _palindrome_sample(rng: random.Random, n: int) -> list[str]:
    if rng.random() < 0.5:  # half palindromes, or the answer would nearly always be 0
        half = _bits(rng, n // 2)
        return half + _bits(rng, n % 2) + half[::-1]
    return _bits(rng, n)


def _unary_parse(text: str) -> list[str]:
    t = text.strip()
    if t.isdigit() and 0 < int(t) <= 1_000_000:
        return ["1"] * int(t)
    if t and set(t) == {"1"}:
        return list(t)
    raise ValueError(f"bad input {text!r}: expected a unary string like 1111 or a count from 1 to 1000000")


DEMOS: dict[str, Demo] = {
    d.machine.name: d
    for d in (
        Demo(parse_machine(INCREMENT), "binary increment, most significant bit first; D_n: uniform n-bit strings",
             _bits, lambda x: list(format(int("".join(x), 2) + 1, f"0{len(x)}b")), _parse_bits),
        Demo(parse_machine(ADD), "binary addition of two n-bit numbers, one column per cell; D_n: uniform",
             _add_sample, _add_truth, _add_parse),
        Demo(parse_machine(PALINDROME), "palindrome check (O(n^2) steps); D_n: half palindromes, half uniform",
             _palindrome_sample, lambda x: ["1" if list(x) == list(x)[::-1] else "0"], _parse_bits),
        Demo(parse_machine(UNARY), "unary to binary, least significant bit first (O(n log n) steps); D_n: 1^n",
             lambda rng, n: ["1"] * n, lambda x: list(format(len(x), "b")[::-1]), _unary_parse),
    )
}  # fmt: skip


def get_demo(name: str) -> Demo:
    try:
        return DEMOS[name]
    except KeyError:
        raise ValueError(f"unknown machine {name!r} (choose from: {', '.join(DEMOS)})") from None
