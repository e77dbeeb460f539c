"""Theorem 2.2, executable: Lemma B.1's sample budget, the table learner trained on compiled traces, and its
errors at every length. The machines, their traces and the learner are the task layer's
(`toolssm.tasks.turing_machines`); this module is the experiment on them (docs/theory.md).

- **Lemma B.1's budget** (`sample_budget`): m = n0 · M · log(M/δ) / ε samples, M = |Q|·|Σ|.
- **The experiment**: `training_traces` from D_1..D_{n0}, `evaluate_learner` at any length, and
  `estimate_n0`, Lemma B.1's n0 from the pair frequencies.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from toolssm.protocol import EOS, Episode, Trajectory
from toolssm.tasks.turing_machines import Demo, TableLearner, compile_trace, run, state_token
from toolssm.tools.tape import BLANK


def sample_budget(n_pairs: int, eps: float, delta: float, n0: int) -> tuple[int, int]:
    """Lemma B.1: m' = M·log(M/δ)/ε samples from each of D_1..D_{n0}; returns (m', m = n0·m')."""
    if not (0 < eps < 1 and 0 < delta < 1) or n_pairs < 1 or n0 < 1:
        raise ValueError("need 0 < eps < 1, 0 < delta < 1, M >= 1 and n0 >= 1")
    per = math.ceil(n_pairs * math.log(n_pairs / delta) / eps)
    return per, n0 * per


# -- the experiment: coverage, then zero errors at every length ------------------------------------------------


def training_traces(demo: Demo, n0: int, per_length: int, seed: int = 0) -> list[Trajectory]:
    """The compiled traces of ``per_length`` draws from each of D_1..D_{n0} (Lemma B.1's sampling scheme).
    A repeated input gives the same trace, which adds nothing to Â or R: each distinct one is kept once."""
    rng = random.Random(f"tm-train:{demo.machine.name}:{seed}")
    inputs = dict.fromkeys(tuple(demo.sample(rng, n)) for n in range(1, n0 + 1) for _ in range(per_length))
    return [compile_trace(demo.machine, x) for x in inputs]


@dataclass
class LengthErrors:
    n: int
    problems: int
    errors: int  # wrong output stream
    trace_errors: int  # the learner's trajectory differs from F(x)
    unseen: int  # problems that visit a pair outside Â
    steps: int  # TM steps per problem (mean)


def evaluate_learner(learner: TableLearner, demo: Demo, n: int, problems: int, seed: int = 0) -> LengthErrors:
    """Run the learner's policy against fresh tape oracles on ``problems`` inputs from D_n."""
    rng = random.Random(f"tm-eval:{demo.machine.name}:{seed}:{n}")
    m = demo.machine
    errors = trace_errors = unseen = steps = 0
    covered = learner.covered
    for _ in range(problems):
        x = demo.sample(rng, n)
        ref = compile_trace(m, x)
        r = run(m, x)
        steps += r.steps
        unseen += any((state_token(q), EOS if s == BLANK else s) not in covered for q, s in r.visited)
        ep = Episode(m.tool(), x, record=True, show_input=False, max_tokens=2 * len(ref) + 64)
        ep.reset()
        learner.drive(ep)
        errors += ep.output != demo.truth(x)
        trace_errors += ep.trajectory.tokens != ref.tokens  # type: ignore[union-attr]
    return LengthErrors(n, problems, errors, trace_errors, unseen, steps // max(1, problems))


def estimate_n0(demo: Demo, eps: float, n_max: int, samples: int = 200, seed: int = 0) -> tuple[int, dict]:
    """Lemma B.1's n0, estimated: p_n(q,s) from ``samples`` runs per length n <= n_max; A_ε is the pairs with
    sup_n p_n >= 2ε/M; n0 is the largest over A_ε of the first n with p_n >= ε/M. Returns (n0, p_n table)."""
    m = demo.machine
    M = m.n_pairs
    rng = random.Random(f"tm-n0:{m.name}:{seed}")
    p: dict[tuple[str, str], list[float]] = {}
    for n in range(1, n_max + 1):
        counts: dict[tuple[str, str], int] = {}
        for _ in range(samples):
            for pair in run(m, demo.sample(rng, n)).visited:
                counts[pair] = counts.get(pair, 0) + 1
        for pair in set(p) | set(counts):
            p.setdefault(pair, [0.0] * (n - 1)).append(counts.get(pair, 0) / samples)
    a_eps = {pair: ps for pair, ps in p.items() if max(ps) >= 2 * eps / M}
    n0 = max((next(i + 1 for i, v in enumerate(ps) if v >= eps / M) for ps in a_eps.values()), default=1)
    return n0, p
