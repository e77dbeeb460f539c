"""Predict length generalization before training: the policy window k and the coverage of its contexts.

Two questions about a task's expert trajectories, answered without a model (docs/analysis.md):

- **Locality.** The policy window k: the smallest k for which every generated token (thought, command,
  output) is a function of the k tokens before it, over a sample (`toolssm.locality`). A k that grows with
  the problem size says the expert counts.
- **Coverage.** Whether the contexts of the trajectories at a test size were seen in the training sample.
  The Theorem 2.2 learner (a k-gram lookup table, `--model kgram`, its rule `toolssm.locality.ContextTable`)
  stops where the context it reads was never seen, and is wrong where a seen context was followed by
  another token in training. The strict reading (``k_covered``): every full k-token context was seen.

A test trajectory is *predicted exact* when the table built from the training sample gives the expert's
token at every generated position (an unseen context counts as right only where the expert ends with
[EOS], which is what the table learner emits there). That is exactly the k-gram learner's trajectory
exact match, so the fractions at each size make its ``n→m (p%)`` row without training it.

The training sample is the problems ``toolssm train --steps S --batch-size B --seed SEED`` draws, and the
test problems are those ``toolssm eval --n-problems N --seed SEED`` draws, so the prediction and the
k-gram learner's measured row are about the same problems. With stored trajectories (``analyze --data``, code
fixing's collection), the training sample is the batches ``train --data`` draws from them. Windows are hashed to 64-bit keys
(`toolssm.locality.suffix_keys`); test trajectories are made and checked one at a time.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from toolssm.data import stored_batch
from toolssm.locality import ContextTable, best_next, context_keys, smallest_window, suffix_keys
from toolssm.protocol import EOS, Role, Trajectory, Vocab
from toolssm.tasks import Task


@dataclass
class Encoded:
    """One trajectory as arrays: token ids plus one (0 is "before the start"), and its generated positions.
    ``target``: what the learner must write at each position, where it differs from what it reads there
    (`Exchangeable`)."""

    ids: np.ndarray  # (L,) int64
    gen: np.ndarray  # (L,) bool: thought, command or output
    target: np.ndarray | None = None
    start: int = 0  # the first position after the input

    @classmethod
    def of(cls, traj: Trajectory, vocab: Vocab, same: Exchangeable | None = None) -> Encoded:
        if same is not None:
            e = same.encode(traj)
        else:
            e = cls(np.asarray(vocab.ids(traj.tokens), dtype=np.int64) + 1, np.asarray(traj.loss_mask(), dtype=bool))
        e.start = next((i for i, r in enumerate(traj.roles) if r != Role.INPUT), len(traj))
        return e

    @property
    def next(self) -> np.ndarray:
        return self.ids if self.target is None else self.target


class Exchangeable:
    """Tokens the expert treats alike (Hanoi's 100 disk tokens, say): it copies them and never decides by which
    one it read. A table over raw tokens would need every context with every one of them; this view reads
    each as one class token, ``⟨x⟩``, and writes one as ``⟨copy m⟩``, a copy of the m-th last one read or
    written (m = 0 the last), or ``⟨new x⟩`` if none of the last ``depth`` is it. Contexts then count the
    trajectory's structure, not its values (a learner that copies: a pointer network, an attention head)."""

    def __init__(self, vocab: Vocab, pattern: str, depth: int = 8):
        import re

        rx = re.compile(pattern)
        self.same = frozenset(t for t in vocab.tokens if rx.fullmatch(t))
        if not self.same:
            raise ValueError(f"bad --exchangeable {pattern!r}: it matches none of the task's tokens")
        self.depth = depth
        self.vocab = Vocab([*vocab.tokens, "⟨x⟩", *(f"⟨copy {m}⟩" for m in range(depth)), "⟨new x⟩"])
        self._ids = {t: self.vocab.id(t) + 1 for t in vocab.tokens}
        self._cls = {t: self.vocab.id("⟨x⟩") + 1 for t in self.same}

    def encode(self, traj: Trajectory) -> Encoded:
        from collections import deque

        gen = np.asarray(traj.loss_mask(), dtype=bool)
        ids = np.asarray([self._cls.get(t) or self._ids[t] for t in traj.tokens], dtype=np.int64)
        target = ids.copy()
        recent: deque[str] = deque(maxlen=self.depth)
        copy0, new = self.vocab.id("⟨copy 0⟩") + 1, self.vocab.id("⟨new x⟩") + 1
        for i, t in enumerate(traj.tokens):
            if t in self.same:
                if gen[i]:
                    m = next((m for m, r in enumerate(reversed(recent)) if r == t), None)
                    target[i] = new if m is None else copy0 + m
                recent.append(t)
        return Encoded(ids, gen, target)


@dataclass
class Finding:
    """A generated position whose context the training table has no rule for (``table`` None), or a rule
    other than the expert's."""

    problem: int  # index of the problem in its sample
    position: int  # token index in the trajectory
    context: list[str]  # the k tokens before it
    expert: str  # what the expert writes there
    table: str | None  # what the training sample wrote after that context (None: never seen)

    def describe(self) -> str:
        what = ("an unseen context" if self.table is None
                else f"a context after which training wrote {self.table!r}")  # fmt: skip
        return (f"problem {self.problem}, token {self.position:,}: after {' '.join(self.context)!r} the expert "
                f"writes {self.expert!r}: {what}")  # fmt: skip


@dataclass
class SizeReport:
    spec: str
    size: int
    n: int
    window: int | None  # the policy window of this size's sample alone (None: above max_k)
    covered: float  # fraction of trajectories with no unseen context (at every generated position)
    k_covered: float  # fraction whose every full k-token context after the input was seen in training
    k_checked: int  # generated positions whose k-token window lies after the input (what k_covered checks)
    exact: float  # fraction the table reproduces token for token: the k-gram learner's trajectory EM
    unseen: int  # generated positions with an unseen context, over the sample
    wrong: int  # generated positions whose seen context has another next token in training
    tokens_per_problem: float
    seconds: float
    first_unseen: Finding | None = None
    first_wrong: Finding | None = None
    first_k_unseen: Finding | None = None


@dataclass
class Analysis:
    task: str
    train_size: int
    k: int  # the table's context length: the policy window unless given (max_k if there is none up to it)
    policy_window: int | None  # of the training sample (None: above max_k)
    k_conflict: Finding | None  # with k below the policy window: a k-context training itself disagrees on
    k_by_train_size: dict[int, int | None]  # the window of a training sample drawn up to each size
    n_train: int
    train_tokens: int
    contexts: int  # distinct contexts (of 1..k tokens) in the training table
    exchangeable: str = ""  # the regex of tokens read as one class (`Exchangeable`); "" for none
    stored: int = 0  # with --data: the stored trajectories the sample was drawn from (0: drawn online)
    sizes: list[SizeReport] = field(default_factory=list)
    seconds: float = 0.0


# -- tables over encoded samples -------------------------------------------------------------------------


def _last(keys: Iterable[np.ndarray]) -> np.ndarray:
    """The last array an iterator yields, holding one at a time (the keys of the longest window)."""
    for last in keys:
        pass
    return last


def _joined(sample: Sequence[Encoded], pad: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The sample as one array, each trajectory after ``pad`` zeros ("before the start"); the token to write at
    each generated position, where that is in the array, and which trajectory it belongs to."""
    ids, nxt, gen, which = [], [], [], []
    for j, e in enumerate(sample):
        ids += [np.zeros(pad, dtype=np.int64), e.ids]
        nxt += [np.zeros(pad, dtype=np.int64), e.next]
        gen += [np.zeros(pad, dtype=bool), e.gen]
        which.append(np.full(pad + len(e.ids), j))
    if not ids:
        return (np.zeros(0, dtype=np.int64),) * 4
    at = np.flatnonzero(np.concatenate(gen))
    return np.concatenate(ids), np.concatenate(nxt)[at], at, np.concatenate(which)[at]


def _rows(sample: Sequence[Encoded], k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(key of the k tokens before, next id + 1, sample index, position) at every generated position."""
    ids, nxt, at, which = _joined(sample, k)
    keys = _last(suffix_keys(ids, k, k - 1))[at - k]  # keys[p - k + 1 - 1]: the window ending just before p
    starts = np.concatenate([[0], np.cumsum([k + len(e.ids) for e in sample])])
    return keys, nxt, which, at - starts[which] - k


def conflict(sample: Sequence[Encoded], k: int) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """Two generated positions (sample index, position) with the same k tokens before them and different
    tokens at them, or None: the policy is k-local on the sample."""
    keys, nxt, which, pos = _rows(sample, k)
    order = np.lexsort((nxt, keys))
    keys, nxt = keys[order], nxt[order]
    bad = np.flatnonzero((keys[1:] == keys[:-1]) & (nxt[1:] != nxt[:-1]))
    if not len(bad):
        return None
    a, b = order[bad[0]], order[bad[0] + 1]
    return (int(which[a]), int(pos[a])), (int(which[b]), int(pos[b]))


def window(sample: Sequence[Encoded], max_k: int = 64) -> int | None:
    """The smallest k <= max_k for which the sample's policy is k-local (None if there is none)."""
    return smallest_window(lambda k: conflict(sample, k) is None, max_k)


def context_table(sample: Sequence[Encoded], k: int) -> ContextTable:
    """The k-gram learner's tables for contexts of 1..k tokens, counted over the sample."""
    ids, nxt, at, _ = _joined(sample, k)
    return ContextTable([best_next(keys[at - k], nxt) for keys in suffix_keys(ids, k, k - 1)])


# -- samples ----------------------------------------------------------------------------------------------


def training_problems(task: Task, train_size: int, steps: int, batch_size: int, seed: int) -> list:
    """The problems ``train`` draws in its first ``steps`` steps (as `toolssm.train.make_batch` draws them,
    with no --mix)."""
    out = []
    for step in range(steps):
        rng = random.Random(f"{seed}:{step}")
        out.extend(task.sample(rng, train_size) for _ in range(batch_size))
    return out


def eval_problems(task: Task, spec: str, n: int, seed: int) -> list:
    """The problems ``eval`` draws at one size (as `toolssm.evaluate.evaluate_size` draws them)."""
    rng = random.Random(f"eval:{seed}:{spec}")
    return [task.draw(rng, spec) for _ in range(n)]


def _finding(vocab: Vocab, e: Encoded, problem: int, position: int, j: int, table_next: int) -> Finding:
    def tok(i: int) -> str:
        return vocab.token(int(i) - 1) if i else "(before the start)"

    ctx = [tok(i) for i in (*([0] * max(0, j - position)), *e.ids[max(0, position - j) : position])]
    return Finding(problem, position, ctx, tok(e.next[position]), tok(table_next) if table_next else None)


def check_size(task: Task, vocab: Vocab, table: ContextTable, problems: Iterable, spec: str, *,
               max_k: int = 64, window_of_size: bool = True, same: Exchangeable | None = None) -> SizeReport:  # fmt: skip
    """Coverage of one test size: each trajectory is made, checked against the table and dropped; only its
    ids are kept when ``window_of_size`` asks for this size's own policy window."""
    t0 = time.perf_counter()
    n = covered = k_covered = k_checked = exact = unseen = wrong = tokens = 0
    first_unseen = first_wrong = first_k_unseen = None
    full = ContextTable([table.tables[-1]])  # the k-token contexts alone, looked up as one table
    kept: list[Encoded] = []
    eos = vocab.id(EOS) + 1
    for p_i, p in enumerate(problems):
        e = Encoded.of(task.demonstrate(p), vocab, same)
        at = np.flatnonzero(e.gen)
        keys = [key[at] for key in context_keys(e.ids, table.k)]
        nxt, depth = table.predict(keys)
        reads_input = at < e.start + table.k  # such a window sees the input's length: not counted (docs)
        k_seen = (full.predict([keys[-1]])[0] != 0) | reads_input
        k_checked += int((~reads_input).sum())
        expert = e.next[at]
        missing = nxt == 0
        bad_unseen = missing & (expert != eos)  # an unseen context: the learner emits [EOS]
        bad_wrong = ~missing & (nxt != expert)
        n, tokens = n + 1, tokens + len(e.ids)
        covered += not missing.any()
        k_covered += bool(k_seen.all())
        if first_k_unseen is None and not k_seen.all():
            i = int(np.argmin(k_seen))
            first_k_unseen = _finding(vocab, e, p_i, int(at[i]), table.k, 0)
        exact += not (bad_unseen.any() or bad_wrong.any())
        unseen, wrong = unseen + int(missing.sum()), wrong + int(bad_wrong.sum())
        if first_unseen is None and missing.any():
            i = int(np.argmax(missing))
            first_unseen = _finding(vocab, e, p_i, int(at[i]), int(depth[i]), 0)
        if first_wrong is None and bad_wrong.any():
            i = int(np.argmax(bad_wrong))
            first_wrong = _finding(vocab, e, p_i, int(at[i]), int(depth[i]), int(nxt[i]))
        if window_of_size:
            kept.append(e)
    k = window(kept, max_k) if window_of_size and kept else None
    return SizeReport(
        spec=spec, size=task.spec_size(spec), n=n, window=k, covered=covered / max(n, 1),
        k_covered=k_covered / max(n, 1), k_checked=k_checked, exact=exact / max(n, 1), first_k_unseen=first_k_unseen,
        unseen=unseen, wrong=wrong, tokens_per_problem=tokens / max(n, 1), seconds=time.perf_counter() - t0,
        first_unseen=first_unseen, first_wrong=first_wrong,
    )  # fmt: skip


def _train_sizes(train_size: int) -> list[int]:
    if train_size <= 8:
        return list(range(1, train_size + 1))
    return sorted({1, 2, train_size // 4 or 1, train_size // 2, train_size})


def analyze(
    task: Task,
    train_size: int,
    sizes: Sequence[str],
    *,
    steps: int = 16,
    batch_size: int = 32,
    seed: int = 0,
    n_problems: int = 20,
    eval_seed: int = 1234,
    max_k: int = 64,
    k: int = 0,
    exchangeable: str = "",
    by_train_size: bool = True,
    progress: bool = False,
    data: list[Trajectory] | None = None,
) -> Analysis:
    """The policy window on the training sample, then the coverage of its contexts at each size in ``sizes``.
    ``k``: the table's context length (a k-gram learner's ``--model.window``); 0: the policy window.
    ``exchangeable``: a regex for tokens read as one class and written as copies (`Exchangeable`).
    ``data``: stored trajectories (`toolssm.data.load_stored`, as ``train --data`` loads them): the training
    sample is then the batches ``train --data`` draws from them (`toolssm.data.stored_batch`), and the window by
    training size is not computed (a stored trajectory carries no problem size); test sizes are still drawn
    and demonstrated by the task's expert."""
    for s in sizes:  # bad sizes fail before any work
        task.spec_size(s)
    t0 = time.perf_counter()
    vocab = task.vocab()
    same = Exchangeable(vocab, exchangeable) if exchangeable else None
    if same is not None:
        vocab = same.vocab
    if data is not None:
        trajs = [t for step in range(steps) for t in stored_batch(data, step, batch_size, seed)]
        sample = [Encoded.of(t, vocab, same) for t in trajs]
        sizes_drawn, by_train_size = [], False
    else:
        problems = training_problems(task, train_size, steps, batch_size, seed)
        sample = [Encoded.of(task.demonstrate(p), vocab, same) for p in problems]
        sizes_drawn = [task.size(p) for p in problems]
    policy = window(sample, max_k)
    k = k or policy or max_k
    k_conflict = None
    if policy is None or k < policy:  # some k-context is followed by two tokens in training: say where
        (a, i), (b, j) = conflict(sample, k)  # type: ignore[misc]
        k_conflict = _finding(vocab, sample[a], a, i, k, int(sample[b].next[j]))
    by_size: dict[int, int | None] = {}
    if by_train_size:
        for n in _train_sizes(train_size):
            sub = [e for e, s in zip(sample, sizes_drawn) if s <= n]
            if sub:  # a task may have no problems that small (a logical graph has at least 6 nodes)
                by_size[n] = window(sub, max_k)
    table = context_table(sample, k)
    result = Analysis(
        task=task.name, train_size=train_size, k=k, policy_window=policy, k_conflict=k_conflict, k_by_train_size=by_size,
        n_train=len(sample), train_tokens=int(sum(len(e.ids) for e in sample)), contexts=len(table),
        exchangeable=exchangeable, stored=len(data) if data is not None else 0,
    )  # fmt: skip
    if progress:
        print(f"  trained on {len(sample)} problems (<= {train_size}): k = {k}", flush=True)
    for spec in sizes:
        r = check_size(task, vocab, table, eval_problems(task, spec, n_problems, eval_seed), spec, max_k=max_k,
                       same=same)  # fmt: skip
        result.sizes.append(r)
        if progress:
            print(f"  size {spec:>6}: covered {r.covered:6.1%}  exact {r.exact:6.1%}  ({r.seconds:.1f}s)", flush=True)
    result.seconds = time.perf_counter() - t0
    return result


def format_analysis(a: Analysis, row: str) -> str:
    """The report ``toolssm analyze`` prints; ``row`` is the predicted ``n→m (p%)`` cell."""
    ks = "  ".join(f"≤{n}: {'–' if v is None else v}" for n, v in a.k_by_train_size.items())
    what = (f"{a.n_train:,} draws from {a.stored:,} stored trajectories" if a.stored
            else f"{a.n_train:,} problems of size ≤ {a.train_size}")  # fmt: skip
    lines = [
        f"{a.task}: trained on {what} ({a.train_tokens:,} tokens)",
        f"policy window {'> ' + str(a.k) if a.policy_window is None else a.policy_window}; the table reads up to "
        f"k = {a.k} tokens back ({a.contexts:,} distinct contexts of 1..k tokens)",
    ]
    if ks:
        lines.append(f"k by training size: {ks}")
    if a.k_conflict:
        lines.append(f"  at k = {a.k} training itself disagrees: {a.k_conflict.describe()}")
    view = f", reading {a.exchangeable!r} as one token class" if a.exchangeable else ""
    lines.append(f"predicted (k-gram learner{view}): {row}   (paper notation n→m (p%))")
    head = (f"{'size':>8} | {'k here':>6} | {'k-covered':>9} | {'covered':>7} | {'exact':>6} | {'unseen':>7} | "
            f"{'wrong':>6} | {'tokens/prob':>11} | {'time':>6}")
    lines += ["", head, "-" * len(head)]
    for r in a.sizes:
        kk = "–" if r.window is None else str(r.window)
        kc = f"{r.k_covered:.0%}" if r.k_checked else "–"
        lines.append(f"{r.spec:>8} | {kk:>6} | {kc:>9} | {r.covered:>7.0%} | {r.exact:>6.0%} | {r.unseen:>7,} | {r.wrong:>6,} |"
                     f" {r.tokens_per_problem:>11,.0f} | {r.seconds:>5.1f}s")  # fmt: skip
    notes = [(r.spec, f) for r in a.sizes for f in (r.first_unseen, r.first_wrong) if f is not None]
    if notes:
        lines += ["", "first context that breaks the table, per size (what to redesign):"]
        lines += [f"  size {spec}: {f.describe()}" for spec, f in notes]
    firsts = [(r.spec, r.first_k_unseen) for r in a.sizes if r.first_k_unseen is not None]
    if firsts:
        lines += ["", "first k-token context never seen in training, per size:"]
        lines += [f"  size {spec}: {f.describe()}" for spec, f in firsts]
    lines.append(f"\n({a.seconds:.1f}s. k here: the policy window of that size's sample alone, – above the search "
                 f"limit; k-covered: every full k-token context after the input seen in training; covered: no unseen context of "
                 f"the length the table reads; exact: the table reproduces the whole trajectory)")
    return "\n".join(lines)
