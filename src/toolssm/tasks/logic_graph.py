"""Logical graph with search memory (paper §3.2, App. D.2-D.3): evaluate a random Boolean circuit.

A problem is a random DAG of n nodes, k = 3 of them inputs, written as Python code, one line per node in
creation order, each line ended by ``[NL]``::

    v630 = True
    v17 = False
    v2 = True
    v191 = v630 and not v17
    v44 = not v191
    v958 = v44 or v2          <- the last node is the output

Tokens: the labels ``v0`` .. ``v999`` are single tokens (unique within a problem, drawn at random), and
``=``, ``and``, ``or``, ``not``, ``True``, ``False``, ``[NL]``.

The expert is a depth-first search driven by ``[find] x [/find]`` (see ``tools/search.py``):

- ``[find] v =`` returns v's defining line and, once v is resolved, the thought line ``v = True`` written
  after it (an input's definition already has that form). So the *last* line of the observation says
  whether v is known, and if not, the first line is its definition.
- Evaluating node p: find each operand in turn. A known operand is substituted. For an unknown operand c,
  write the log line ``c <- p`` (c is evaluated for parent p) and evaluate c, whose definition is already
  in the observation.
- Once all operands of p are known, write ``p = True`` (or False) as a thought line, then
  ``[find] p <-`` to get p's parent q from the log, and evaluate q again from its definition (its operands
  resolved so far are found as known). An empty answer means p is the output: write ``[ANS]`` and the
  answer line ``p = True`` (the output stream), then ``[EOS]``.

Every decision depends on the last observation or two and the line being evaluated: the DFS stack lives
in memory as log lines, not in the model.

``logic-graph-digits`` is the same task, problems and algorithm with each label spelled as tokens, ``v 6 3 0``
(``v`` and its digits), as a subword tokenizer would split ``v630``. Copying a label is then copying a few
tokens of an 11-symbol alphabet that every problem trains, not one of 1,000 tokens each seen a few times; the
search tool's contiguous match keeps ``v 1 7 =`` from matching ``v 2 1 7 =`` (docs/tasks/logic_graph.md).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from toolssm.protocol import ANS, EOS, Episode
from toolssm.tasks.base import Task, Verdict, register
from toolssm.tools.search import END_FIND, END_OBS, FIND, NL, OBS, SearchMemory

N_LABELS = 1000
LABELS = tuple(f"v{i}" for i in range(N_LABELS))
N_INPUTS = 3
PARENT = "<-"
OPS = ("and", "or")
VALUES = ("True", "False")
DIGITS = tuple("0123456789")
_LABEL = re.compile(r"^v(0|[1-9]\d{0,2})$", re.ASCII)


@dataclass(frozen=True)
class Node:
    name: str
    #: an input's value; None for an internal node
    value: bool | None = None
    #: "and" / "or" for two operands, None for one (or for an input)
    op: str | None = None
    #: the operands: (negated, name)
    args: tuple[tuple[bool, str], ...] = ()

    def tokens(self) -> list[str]:
        if self.value is not None:
            return [self.name, "=", str(self.value)]
        out = [self.name, "="]
        for i, (neg, a) in enumerate(self.args):
            if i:
                out.append(self.op)  # type: ignore[arg-type]
            if neg:
                out.append("not")
            out.append(a)
        return out


@dataclass(frozen=True)
class LogicGraphProblem:
    nodes: tuple[Node, ...]  # in creation order; the last one is the output

    @property
    def output(self) -> str:
        return self.nodes[-1].name


def evaluate_circuit(problem: LogicGraphProblem) -> dict[str, bool]:
    """Every node's value, by simulation in creation order."""
    val: dict[str, bool] = {}
    for node in problem.nodes:
        if node.value is not None:
            val[node.name] = node.value
            continue
        xs = [val[a] != neg for neg, a in node.args]
        val[node.name] = xs[0] if len(xs) == 1 else (xs[0] and xs[1]) if node.op == "and" else (xs[0] or xs[1])
    return val


def random_graph(rng: random.Random, n: int) -> LogicGraphProblem:
    """n nodes: 3 random inputs, then each new node is AND/OR over one or two distinct existing variables,
    each negated with probability 1/2. Labels are distinct, drawn from v0..v999."""
    if not N_INPUTS < n <= N_LABELS:
        raise ValueError(f"a logic graph has {N_INPUTS + 1}..{N_LABELS} nodes, got {n}")
    names = [LABELS[i] for i in rng.sample(range(N_LABELS), n)]
    nodes = [Node(names[i], value=rng.random() < 0.5) for i in range(N_INPUTS)]
    for i in range(N_INPUTS, n):
        k = rng.choice((1, 2))
        args = tuple((rng.random() < 0.5, names[j]) for j in rng.sample(range(i), k))
        nodes.append(Node(names[i], op=rng.choice(OPS) if k == 2 else None, args=args))
    return LogicGraphProblem(tuple(nodes))


def _value_line(line: Sequence[str]) -> bool | None:
    """``v = True`` -> True, ``v = False`` -> False, anything else (a definition) -> None."""
    if len(line) == 3 and line[2] in VALUES:
        return line[2] == "True"
    return None


def _split_lines(obs: Sequence[str]) -> list[list[str]]:
    assert obs and obs[0] == OBS and obs[-1] == END_OBS, obs
    lines, cur = [], []
    for t in obs[1:-1]:
        if t == NL:
            lines.append(cur)
            cur = []
        else:
            cur.append(t)
    return lines


def _operands(definition: Sequence[str]) -> tuple[str | None, list[tuple[bool, str]]]:
    """Parse the right-hand side of ``v = [not] a [op [not] b]``."""
    op, args, neg = None, [], False
    for t in definition[2:]:
        if t == "not":
            neg = True
        elif t in OPS:
            op = t
        else:
            args.append((neg, t))
            neg = False
    return op, args


@register
class LogicGraph(Task):
    name = "logic-graph"
    symbols = (*LABELS, "=", *OPS, "not", *VALUES, PARENT, NL)

    def make_tool(self) -> SearchMemory:
        return SearchMemory()

    def sample(self, rng: random.Random, max_size: int) -> LogicGraphProblem:
        return random_graph(rng, rng.randint(N_INPUTS + 1, max(N_INPUTS + 1, min(max_size, N_LABELS))))

    def parse_spec(self, spec: str) -> int:
        n = super().parse_spec(spec)
        if not N_INPUTS < n <= N_LABELS:
            raise ValueError(f"bad size {spec!r} for task {self.name}: a graph has {N_INPUTS + 1}..{N_LABELS} nodes")
        return n

    def sample_eval(self, rng: random.Random, spec: str) -> LogicGraphProblem:
        return random_graph(rng, self.parse_spec(spec))

    def parse(self, text: str) -> LogicGraphProblem:
        """Python-like lines ``v1 = True`` / ``v7 = v1 and not v3`` (newlines or ``;`` between lines)."""
        nodes: list[Node] = []
        seen: set[str] = set()
        for raw in re.split(r"[\n;]", text):
            words = raw.split()
            if not words:
                continue
            bad = ValueError(f"bad line {raw.strip()!r}: expected e.g. 'v7 = True' or 'v7 = v1 and not v3'")
            if len(words) < 3 or words[1] != "=" or not _LABEL.match(words[0]):
                raise bad
            name = words[0]
            if name in seen:
                raise ValueError(f"variable {name} is defined twice")
            rhs = words[2:]
            if rhs in (["True"], ["False"]):
                nodes.append(Node(name, value=rhs[0] == "True"))
            else:
                op, args = _operands(words)
                ok = re.fullmatch(r"(not )?v\d+( (and|or) (not )?v\d+)?", " ".join(rhs), re.ASCII)
                if not ok or len({a for _, a in args}) != len(args):
                    raise bad
                for _, a in args:
                    if a not in seen:
                        raise ValueError(f"variable {a} is used before it is defined")
                nodes.append(Node(name, op=op, args=tuple(args)))
            seen.add(name)
        if not nodes or nodes[-1].value is not None:
            raise ValueError("the last line must define the output from other variables, e.g. 'v9 = v1 or v2'")
        return LogicGraphProblem(tuple(nodes))

    # -- how a label is written: one token here, spelled in logic-graph-digits ----------------------------
    def spell(self, words: Sequence[str]) -> list[str]:
        """Words (labels among them, as ``v630``) as tokens."""
        return list(words)

    def words(self, tokens: Sequence[str]) -> list[str]:
        """Tokens of one memory line back as words, each label one word (the inverse of `spell`)."""
        return list(tokens)

    def input_tokens(self, problem: LogicGraphProblem) -> list[str]:
        out: list[str] = []
        for node in problem.nodes:
            out.extend(self.spell(node.tokens()))
            out.append(NL)
        return out

    def format(self, problem: LogicGraphProblem) -> str:
        return "\n".join(" ".join(node.tokens()) for node in problem.nodes)

    def size(self, problem: LogicGraphProblem) -> int:
        return len(problem.nodes)

    def expert(self, problem: LogicGraphProblem, episode: Episode) -> None:
        act = episode.act

        def find(*query: str) -> list[list[str]]:
            return [self.words(line) for line in _split_lines(act(FIND, *self.spell(query), END_FIND))]

        cur = problem.output  # the last input line's left-hand side
        definition = find(cur, "=")[0]
        while True:
            op, args = _operands(definition)
            xs: list[bool] = []
            for i, (neg, a) in enumerate(args):
                lines = find(a, "=")
                v = _value_line(lines[-1])
                if v is None:  # unresolved: log the parent, evaluate the child from its definition
                    act(*self.spell((a, PARENT, cur)), NL)
                    cur, definition = a, lines[0]
                    break
                xs.append(v != neg)
                # the literal's value (negation applied) as a line of its own, the first one followed by the
                # operator: p's value is then read off the last two literal lines (see the docs, "locality")
                act(str(xs[-1]), *([op] if i == 0 and op is not None else []), NL)
            else:
                value = xs[0] if len(xs) == 1 else (xs[0] and xs[1]) if op == "and" else (xs[0] or xs[1])
                act(*self.spell((cur, "=", str(value))), NL)
                parent = find(cur, PARENT)
                if not parent:  # the output: answer with its line
                    act(ANS, *self.spell((cur, "=", str(value))), EOS)
                    return
                cur = parent[0][2]
                definition = find(cur, "=")[0]

    def verify(self, problem: LogicGraphProblem, episode: Episode) -> Verdict:
        value = evaluate_circuit(problem)[problem.output]
        expected = " ".join(self.spell((problem.output, "=", str(value))))
        got = " ".join(episode.output)
        return Verdict(got == expected, expected, got)


@register
class LogicGraphDigits(LogicGraph):
    """The logical graph with labels spelled ``v 6 3 0``: same problems, same algorithm, same tool."""

    name = "logic-graph-digits"
    symbols = ("v", *DIGITS, "=", *OPS, "not", *VALUES, PARENT, NL)

    def spell(self, words: Sequence[str]) -> list[str]:
        return [t for w in words for t in (("v", *w[1:]) if _LABEL.match(w) else (w,))]

    def words(self, tokens: Sequence[str]) -> list[str]:
        out: list[str] = []
        for t in tokens:
            if t in DIGITS and out and out[-1][0] == "v":
                out[-1] += t
            else:
                out.append(t)
        return out
