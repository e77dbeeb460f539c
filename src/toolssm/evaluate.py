"""Length-generalization evaluation: three metrics over a grid of sizes (tables and plots: toolssm.plots).

Metrics, per size:
    answer      exact match of the output stream, judged by the task's verifier (the headline metric)
    trajectory  exact match of the whole trajectory: the model reproduced the expert token for token
    token       teacher-forced next-token accuracy on the trained positions of the expert trajectory

The paper's notation ``n→m (p%)``: trained up to size n, m is the largest tested size at which answer
accuracy is still at least 5%, and p is the accuracy there.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from toolssm.batching import collate
from toolssm.models import SequenceModel
from toolssm.protocol import Trajectory, Vocab
from toolssm.provenance import provenance
from toolssm.rollout import rollout
from toolssm.tasks import Task
from toolssm.tasks.base import TRAINING_DRAW


@dataclass
class LengthResult:
    spec: str
    size: int
    n: int
    answer_acc: float
    trajectory_acc: float
    token_acc: float | None
    truncated: int
    tokens_per_problem: float
    seconds: float

    @property
    def answer_interval(self) -> tuple[float, float]:
        """The Wilson 95% interval of the answer accuracy over the ``n`` problems ((0, 1) when n is 0)."""
        return wilson(round(self.answer_acc * self.n), self.n)

    @property
    def drawn_as_in_training(self) -> bool:
        """A ``"<=N"`` row: problems of every size up to N, mixed as in training. It is in-distribution
        accuracy, not a point on the length axis, so the ``n→m`` cell and the plots leave it out."""
        return self.spec.startswith(TRAINING_DRAW)


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval (Wilson, 1927) of a proportion k/n, 95% at the default z: unlike the normal
    approximation it stays inside [0, 1] and is not empty at 0/n or n/n (at 20/20: 84% to 100%)."""
    if n <= 0:
        return 0.0, 1.0
    p, z2 = k / n, z * z
    center = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, center - half), min(1.0, center + half)


@torch.no_grad()
def token_accuracy(
    model: SequenceModel, trajs: Sequence[Trajectory], vocab: Vocab, device, chunk: int = 4096
) -> tuple[int, int]:
    """(correct, total) teacher-forced predictions on trained positions, streamed in time chunks so
    memory stays flat for very long trajectories."""
    model.eval()
    tokens, mask = collate(list(trajs), vocab)
    tokens, mask = tokens.to(device), mask.to(device)
    inp, tgt, m = tokens[:, :-1], tokens[:, 1:], mask[:, 1:]
    correct = total = 0
    state = None
    for s in range(0, inp.shape[1], chunk):
        logits, state = model(inp[:, s : s + chunk], state)
        mm = m[:, s : s + chunk]
        correct += int((logits.argmax(-1) == tgt[:, s : s + chunk])[mm].sum())
        total += int(mm.sum())
    return correct, total


def _score_batch(
    model: SequenceModel, task: Task, vocab: Vocab, batch: Sequence, device, with_token_acc: bool,
    progress: bool = False, desc: str = "decode",
) -> tuple[int, ...]:
    """(answers right, trajectories right, truncated, tokens, token-acc correct, token-acc total) on one batch.
    Each answer is graded by ``task.verify`` on its finished episode (output stream and tool), before the
    episodes close their tools."""
    refs = [task.demonstrate(p) for p in batch]
    with contextlib.ExitStack() as stack:
        episodes = [stack.enter_context(task.episode(p, max_tokens=task.token_budget(p))) for p in batch]
        results = rollout(
            model, vocab, episodes, references=[vocab.ids(r.tokens) for r in refs], device=device,
            progress=progress, desc=desc,
        )  # fmt: skip
        n_ans = sum(task.verify(p, ep).correct for p, ep in zip(batch, episodes))
    n_traj = sum(bool(r.trajectory_match) for r in results)
    n_trunc = sum(r.truncated for r in results)
    n_tok = sum(r.n_tokens for r in results)
    tok_c, tok_t = token_accuracy(model, refs, vocab, device) if with_token_acc else (0, 0)
    return n_ans, n_traj, n_trunc, n_tok, tok_c, tok_t


# -- fan-out: each worker process holds the model and scores whole batches with one torch thread ----------

_WORKER: dict = {}


def _init_worker(model: SequenceModel, vocab: Vocab) -> None:
    torch.set_num_threads(1)
    _WORKER.update(model=model, vocab=vocab)


def _worker_score(task: Task, batch: Sequence, with_token_acc: bool) -> tuple[int, ...]:
    return _score_batch(_WORKER["model"], task, _WORKER["vocab"], batch, "cpu", with_token_acc)


def evaluate_size(
    model: SequenceModel,
    task: Task,
    vocab: Vocab,
    spec: str,
    *,
    n_problems: int,
    seed: int,
    batch_size: int = 32,
    device="cpu",
    with_token_acc: bool = True,
    progress: bool = False,
    pool: Executor | None = None,
    time_limit: float | None = None,
) -> LengthResult:
    """Metrics at one size. With a ``pool`` (see `evaluate`'s ``procs``) the batches are scored in its worker
    processes; batches are the same either way, so the counts are identical. ``time_limit`` (seconds, in
    this process only): no new batch starts after it, and the result covers the problems done (``n``)."""
    size = task.spec_size(spec)
    rng = random.Random(f"eval:{seed}:{spec}")
    problems = [task.draw(rng, spec) for _ in range(n_problems)]
    batches = [problems[b : b + batch_size] for b in range(0, n_problems, batch_size)]
    t0 = time.perf_counter()
    if pool is None:
        scores = []
        for b in batches:
            if scores and time_limit is not None and time.perf_counter() - t0 > time_limit:
                break
            scores.append(_score_batch(model, task, vocab, b, device, with_token_acc, progress, f"decode size {spec}"))
        n_problems = sum(len(b) for b in batches[: len(scores)])
    else:
        scores = list(pool.map(_worker_score, [task] * len(batches), batches, [with_token_acc] * len(batches)))
    n_ans, n_traj, n_trunc, n_tok, tok_c, tok_t = (sum(col) for col in zip(*scores))
    return LengthResult(
        spec=spec, size=size, n=n_problems, answer_acc=n_ans / n_problems, trajectory_acc=n_traj / n_problems,
        token_acc=(tok_c / tok_t) if with_token_acc and tok_t else None, truncated=n_trunc,
        tokens_per_problem=n_tok / n_problems, seconds=time.perf_counter() - t0,
    )  # fmt: skip


def evaluate(
    model: SequenceModel,
    task: Task,
    vocab: Vocab,
    specs: Sequence[str],
    *,
    n_problems: int = 20,
    seed: int = 1234,
    batch_size: int = 32,
    device="cpu",
    with_token_acc: bool = True,
    progress: bool = True,
    procs: int = 1,
    stop_below: float | None = None,
    time_limit: float | None = None,
) -> list[LengthResult]:
    """Metrics at each size in ``specs``, in order.

    ``procs`` > 1 fans the batches out over that many CPU processes (spawned, one torch thread each); use a
    ``batch_size`` of about ``n_problems / procs``. ``stop_below``: once a size's answer accuracy is below
    it, the larger sizes are not run (a cost cap for models that have already failed); the returned list
    then ends early. ``time_limit``: per size, no new batch starts after that many seconds (the result's
    ``n`` says how many problems were done; with ``procs`` > 1 it is ignored).
    """
    for s in specs:  # fail fast on a bad spec, before any work
        task.spec_size(s)
    if procs < 1:
        raise ValueError(f"bad procs={procs}: must be positive")
    if procs > 1 and torch.device(device).type != "cpu":
        raise ValueError("procs > 1 fans evaluation out over CPU processes; on a GPU use procs=1")
    out = []
    with contextlib.ExitStack() as stack:
        pool = None
        if procs > 1:
            ctx = torch.multiprocessing.get_context("spawn")
            pool = stack.enter_context(
                ProcessPoolExecutor(procs, mp_context=ctx, initializer=_init_worker, initargs=(model, vocab))
            )
        for spec in specs:
            r = evaluate_size(
                model, task, vocab, spec, n_problems=n_problems, seed=seed, batch_size=batch_size, device=device,
                with_token_acc=with_token_acc, progress=progress, pool=pool, time_limit=time_limit,
            )  # fmt: skip
            if progress:
                print(
                    f"  size {spec:>6}: answer {r.answer_acc:6.1%}  trajectory {r.trajectory_acc:6.1%}"
                    f"  ({r.n} problems, {r.tokens_per_problem:,.0f} tokens each, {r.seconds:.1f}s,"
                    f" {r.n * r.tokens_per_problem / max(r.seconds, 1e-9):,.0f} tokens/s)",
                    flush=True,
                )
            out.append(r)
            if stop_below is not None and r.answer_acc < stop_below:
                break
    return out


def save_results(results: Sequence[LengthResult], path: str | Path, *, seeds: dict | None = None, **meta) -> Path:
    """results.json: ``meta``, the provenance (versions, commit, ``seeds``: toolssm.provenance) and the rows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [asdict(r) for r in results]
    path.write_text(json.dumps({**meta, "provenance": provenance(**(seeds or {})), "results": rows}, indent=2))
    return path
