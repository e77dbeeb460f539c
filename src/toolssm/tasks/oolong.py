"""Oolong-style aggregation over retrieved examples (the camera-ready's experiment, synthetic; docs/tasks/oolong.md).

The paper fine-tunes pretrained 1.4B models on Oolong-synth questions over Yahoo Answers examples, with a tool
that retrieves the next example. Neither the models nor the data can be had here, so the examples are
generated: short questions, each about one of six topics, made of topic words among shared filler words::

    how do i fix my printer and windows ?        (computers)
    is the coach of this team any good ?         (sports)

A problem is a context of N such examples and one aggregation question over all of them, in the spirit of
Oolong-synth's counting questions:

    count T    how many examples are about topic T?   answer: the count, in decimal (``1 7``)
    most       which topic is most frequent?           answer: the topic (ties: the first in TOPICS order)

The tool (``tools/retrieval.py``) holds the context; the model first reads the header (the question and the
starting tally) and then calls ``[next]`` for one example at a time. The expert's trajectory, per example::

    [next] -> how do i fix my printer ? [/ex]       command, observation
    computers [NL]                                  thought: the example's topic (the classification)
    most sports 0 0 0 3 music 0 0 0 1 ... business 0 0 0 0 [NL]
                                                    thought: the question again and the running tally
                                                    (``count T``: T's counter alone, ``count music 0 0 0 1``)

and at the end ``[next] -> [end]``, then ``[ANS]`` and the answer, read off the last tally line, and ``[EOS]``.

The tally is written out, not kept in the model: each counter has WIDTH digits, most significant first, so a
tally line always has the same length and the new one is the old one (a line and one example back) with at
most one counter incremented; a ``count T`` question keeps T's counter only, the one it needs. Every token
the expert writes is a function of the last ~40 tokens, whatever N is (the locality check in
tests/test_oolong.py). The question is copied into every tally line so that the answer does not depend on the
header, which at N = 1,000 is tens of thousands of tokens back.

Training (``sample``): N ≤ max_size examples, and half the problems start from a random tally given in the
header (a continuation of an aggregation over earlier examples), so that every digit and every carry of a
counter appears in training. With a tally that always starts at zero and at most 5 examples, a counter would
never be seen above 5, and no model could learn to write 6 (``oolong-zero`` is that variant, for comparison).
Evaluation (``sample_eval``) always starts from zero.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from toolssm.protocol import ANS, EOS, Episode
from toolssm.tasks.base import Task, Verdict, register
from toolssm.tools.retrieval import CTX, END, END_EX, NEXT, RetrievalTool

NL = "[NL]"
WIDTH = 4  # digits per counter: up to 9,999 examples
MAX_N = 10**WIDTH - 1
DIGITS = tuple(str(d) for d in range(10))
COUNT, MOST = "count", "most"

#: six of Yahoo Answers' ten topics, and ten words each that only that topic uses
TOPIC_WORDS: dict[str, tuple[str, ...]] = {
    "sports": ("team", "game", "coach", "player", "soccer", "league", "score", "goal", "match", "ball"),
    "music": ("song", "band", "guitar", "album", "singer", "concert", "lyrics", "piano", "melody", "drums"),
    "health": ("doctor", "pain", "diet", "sleep", "fever", "medicine", "cough", "vitamin", "weight", "allergy"),
    "science": ("planet", "atom", "gravity", "energy", "cell", "chemistry", "physics", "star", "molecule",
                "experiment"),
    "computers": ("laptop", "software", "windows", "printer", "keyboard", "internet", "virus", "email", "password",
                  "screen"),
    "business": ("money", "stock", "loan", "tax", "bank", "job", "salary", "market", "invest", "company"),
}  # fmt: skip
TOPICS = tuple(TOPIC_WORDS)
STARTERS = ("what", "how", "why", "is", "can", "does", "where", "who")
FILLER = ("the", "a", "best", "way", "to", "my", "do", "i", "you", "for", "good", "it", "get", "should", "in", "of",
          "about", "any", "new", "really", "this", "when", "and", "fix", "find", "need", "help", "with")  # fmt: skip
WORD_TOPIC = {w: t for t, ws in TOPIC_WORDS.items() for w in ws}
QMARK = "?"


@dataclass(frozen=True)
class OolongProblem:
    #: ("count", topic) or ("most", None)
    question: tuple[str, str | None]
    #: the tally the aggregation starts from, one count per topic in TOPICS order (zeros at evaluation)
    start: tuple[int, ...]
    #: the examples' words, ``?`` included
    examples: tuple[tuple[str, ...], ...]


def classify(words: Sequence[str]) -> str:
    """An example's topic: the topic of its topic words (an example has words of exactly one topic)."""
    topics = {WORD_TOPIC[w] for w in words if w in WORD_TOPIC}
    if len(topics) != 1:
        raise ValueError(f"example {' '.join(words)!r} has topic words of {len(topics)} topics, expected 1")
    return topics.pop()


def tally(problem: OolongProblem) -> list[int]:
    """The final counts, by simulation: the start plus each example's topic."""
    counts = list(problem.start)
    for ex in problem.examples:
        counts[TOPICS.index(classify(ex))] += 1
    return counts


def answer(problem: OolongProblem) -> list[str]:
    counts = tally(problem)
    kind, topic = problem.question
    if kind == COUNT:
        return list(str(counts[TOPICS.index(topic)]))  # type: ignore[arg-type]
    return [TOPICS[counts.index(max(counts))]]  # the first of the most frequent


def make_example(rng: random.Random, topic: str) -> tuple[str, ...]:
    """A question of 5 to 9 words: a starter, then filler with 1 to 3 of the topic's words, then ``?``."""
    n_words = rng.randint(4, 8)
    n_topic = rng.randint(1, min(3, n_words))
    slots = set(rng.sample(range(n_words), n_topic))
    body = [rng.choice(TOPIC_WORDS[topic]) if i in slots else rng.choice(FILLER) for i in range(n_words)]
    return (rng.choice(STARTERS), *body, QMARK)


def random_problem(rng: random.Random, n: int, start: Sequence[int] | None = None) -> OolongProblem:
    """n examples; each problem draws its own topic weights, so one topic often dominates (a "most" question
    is then not a coin toss), and each example's topic is drawn from them."""
    if not 1 <= n <= MAX_N:
        raise ValueError(f"an oolong context has 1..{MAX_N} examples, got {n}")
    weights = [rng.random() + 0.1 for _ in TOPICS]
    topics = rng.choices(TOPICS, weights, k=n)
    question = (MOST, None) if rng.random() < 0.5 else (COUNT, rng.choice(TOPICS))
    return OolongProblem(question, tuple(start or (0,) * len(TOPICS)), tuple(make_example(rng, t) for t in topics))


def random_start(rng: random.Random, n: int) -> tuple[int, ...]:
    """A starting tally that exercises every digit and carry: each count has 0..WIDTH digits (uniform), and a
    third of them end in a run of 9s; capped so that n more examples still fit."""
    out = []
    for _ in TOPICS:
        d = rng.randint(0, WIDTH)
        v = rng.randrange(10**d) if d else 0
        if d and rng.random() < 1 / 3:
            r = rng.randint(1, d)
            v = v - v % 10**r + 10**r - 1
        out.append(min(v, MAX_N - n))
    return tuple(out)


def counter(v: int) -> list[str]:
    return list(f"{v:0{WIDTH}d}")


def question_tokens(question: tuple[str, str | None]) -> list[str]:
    kind, topic = question
    return [COUNT, topic] if kind == COUNT else [MOST]  # type: ignore[list-item]


def tally_line(question: tuple[str, str | None], counts: Sequence[int]) -> list[str]:
    """What the expert keeps, as one line: the question, then the counters it needs. ``count T`` needs T's alone
    (``count music 0 0 1 7 [NL]``); ``most`` needs every topic's (``most sports 0 0 0 3 music 0 0 0 1 ... [NL]``).
    counts: one per topic, in TOPICS order."""
    kind, topic = question
    if kind == COUNT:
        return [COUNT, topic, *counter(counts[TOPICS.index(topic)]), NL]  # type: ignore[list-item, arg-type]
    out = [MOST]
    for t, v in zip(TOPICS, counts, strict=True):
        out += [t, *counter(v)]
    return [*out, NL]


def read_tally(line: Sequence[str]) -> dict[str, int]:
    """The counters of a tally line, by topic (one for ``count T``, all six for ``most``)."""
    if line[0] == COUNT:
        return {line[1]: int("".join(line[2 : 2 + WIDTH]))}
    return {line[1 + i * (WIDTH + 1)]: int("".join(line[2 + i * (WIDTH + 1) : (i + 1) * (WIDTH + 1) + 1]))
            for i in range(len(TOPICS))}  # fmt: skip


@register
class Oolong(Task):
    name = "oolong"
    symbols = (*TOPICS, *(w for ws in TOPIC_WORDS.values() for w in ws), *STARTERS, *FILLER, QMARK, *DIGITS,
               COUNT, MOST, NL)  # fmt: skip
    input_in_context = False  # the tool holds the context; the model reads its header, then one example at a time
    #: the share of training problems that start from a random tally (see the module docstring)
    start_fraction = 0.5

    def make_tool(self) -> RetrievalTool:
        return RetrievalTool()

    def sample(self, rng: random.Random, max_size: int) -> OolongProblem:
        n = rng.randint(1, max(1, min(max_size, MAX_N)))
        start = random_start(rng, n) if rng.random() < self.start_fraction else None
        return random_problem(rng, n, start)

    def parse_spec(self, spec: str) -> int:
        n = super().parse_spec(spec)
        if n > MAX_N:
            raise ValueError(f"bad size {spec!r} for task {self.name}: at most {MAX_N} examples "
                             f"({WIDTH}-digit counters)")  # fmt: skip
        return n

    def sample_eval(self, rng: random.Random, spec: str) -> OolongProblem:
        return random_problem(rng, self.parse_spec(spec))

    def parse(self, text: str) -> OolongProblem:
        """The question on the first line (``count sports`` or ``most``), then one example per line; an example's
        words come from the task's vocabulary and include topic words of exactly one topic."""
        lines = [ln.split() for ln in re.split(r"[\n;]", text) if ln.split()]
        if not lines:
            raise ValueError("an oolong problem is a question line ('count sports' or 'most'), then one example "
                             "per line")  # fmt: skip
        q = lines[0]
        if q == [MOST]:
            question: tuple[str, str | None] = (MOST, None)
        elif len(q) == 2 and q[0] == COUNT and q[1] in TOPICS:
            question = (COUNT, q[1])
        else:
            raise ValueError(f"bad question {' '.join(q)!r}: expected 'most' or 'count TOPIC' "
                             f"(topics: {', '.join(TOPICS)})")  # fmt: skip
        if len(lines) - 1 > MAX_N:
            raise ValueError(f"at most {MAX_N} examples, got {len(lines) - 1}")
        if len(lines) == 1:
            raise ValueError("no examples: give one example per line after the question")
        known = set(self.symbols) - {COUNT, MOST, NL, *TOPICS, *DIGITS}
        for words in lines[1:]:
            bad = [w for w in words if w not in known]
            if bad:
                raise ValueError(f"unknown word {bad[0]!r} in example {' '.join(words)!r}")
            classify(words)
        return OolongProblem(question, (0,) * len(TOPICS), tuple(tuple(ws) for ws in lines[1:]))

    def input_tokens(self, problem: OolongProblem) -> list[str]:
        out = [*tally_line(problem.question, problem.start), CTX]
        for ex in problem.examples:
            out += [*ex, END_EX]
        return out

    def format(self, problem: OolongProblem) -> str:
        return "\n".join([" ".join(question_tokens(problem.question)), *(" ".join(ex) for ex in problem.examples)])

    def size(self, problem: OolongProblem) -> int:
        return len(problem.examples)

    def expert(self, problem: OolongProblem, episode: Episode) -> None:
        act = episode.act
        counts = list(problem.start)
        last = tally_line(problem.question, counts)  # the header: the line to update
        while True:
            obs = act(NEXT)
            if obs == [END]:  # the answer, read off the last line
                kept = read_tally(last)
                best = max(kept.values())
                out = list(str(best)) if last[0] == COUNT else [next(t for t, v in kept.items() if v == best)]
                act(ANS, *out, EOS)
                return
            assert obs[-1] == END_EX, obs
            topic = classify(obs[:-1])
            act(topic, NL)
            counts[TOPICS.index(topic)] += 1
            last = tally_line(problem.question, counts)
            act(*last)

    def verify(self, problem: OolongProblem, episode: Episode) -> Verdict:
        expected, got = " ".join(answer(problem)), " ".join(episode.output)
        return Verdict(got == expected, expected, got)


@register
class OolongZero(Oolong):
    """The ablation: every training tally starts at zero, so counters above the training size are never seen."""

    name = "oolong-zero"
    start_fraction = 0.0
