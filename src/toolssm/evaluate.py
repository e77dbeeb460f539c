"""Length-generalization evaluation: three metrics over a grid of sizes, a paper-style table and a plot.

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

from toolssm.models import SequenceModel
from toolssm.protocol import Trajectory, Vocab
from toolssm.rollout import rollout
from toolssm.tasks import Task
from toolssm.tasks.base import TRAINING_DRAW
from toolssm.train import collate


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
    def drawn_as_in_training(self) -> bool:
        """A ``"<=N"`` row: problems of every size up to N, mixed as in training. It is in-distribution
        accuracy, not a point on the length axis, so the ``n→m`` cell and the plots leave it out."""
        return self.spec.startswith(TRAINING_DRAW)


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
    """(answers right, trajectories right, truncated, tokens, token-acc correct, token-acc total) on one batch."""
    refs = [task.demonstrate(p) for p in batch]
    episodes = [task.episode(p, max_tokens=task.token_budget(p)) for p in batch]
    results = rollout(
        model, vocab, episodes, references=[vocab.ids(r.tokens) for r in refs], device=device,
        progress=progress, desc=desc,
    )  # fmt: skip
    n_ans = sum(task.verify(p, r.output).correct for p, r in zip(batch, results))
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


# -- reporting ----------------------------------------------------------------------------------------


def paper_cell(train_size: int, results: Sequence[LengthResult], threshold: float = 0.05) -> str:
    """``n→m (p%)``: m is the largest tested size >= n with answer accuracy >= threshold."""
    ok = [r for r in results if r.size >= train_size and r.answer_acc >= threshold and not r.drawn_as_in_training]
    if not ok:
        return f"{train_size}→– (<{threshold:.0%})"
    best = max(ok, key=lambda r: r.size)
    return f"{train_size}→{_short(best.size)} ({best.answer_acc:.0%})"


def _short(n: int) -> str:
    return f"{n // 1000}K" if n >= 1000 and n % 1000 == 0 else str(n)


def format_table(results: Sequence[LengthResult], *, train_size: int, label: str = "") -> str:
    head = f"{'size':>8} | {'answer EM':>9} | {'traj. EM':>8} | {'token acc':>9} | {'trunc.':>6} | {'tokens/prob':>11} | {'time':>7}"
    lines = [head, "-" * len(head)]
    for r in results:
        tok = f"{r.token_acc:.2%}" if r.token_acc is not None else "–"
        lines.append(
            f"{r.spec:>8} | {r.answer_acc:>9.0%} | {r.trajectory_acc:>8.0%} | {tok:>9} | {r.truncated:>6} |"
            f" {r.tokens_per_problem:>11,.0f} | {r.seconds:>6.1f}s"
        )
    summary = f"{label + ': ' if label else ''}{paper_cell(train_size, results)}   (paper notation n→m (p%))"
    return "\n".join([summary, *lines])


def format_comparison(curves: dict[str, Sequence[LengthResult]], *, train_size: int) -> str:
    """A markdown table: one row per model, the paper's n→m (p%) cell, then answer accuracy per size."""
    specs = list(dict.fromkeys(r.spec for res in curves.values() for r in res))
    head = "| model | n→m (p%) | " + " | ".join(specs) + " |"
    lines = [head, "|" + "---|" * (len(specs) + 2)]
    for label, res in curves.items():
        by = {r.spec: r for r in res}
        cells = [f"{by[s].answer_acc:.0%}" if s in by else "–" for s in specs]
        lines.append(f"| {label} | {paper_cell(train_size, res)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def size_tick_labels(sizes: Sequence[int], lo: float, hi: float) -> dict[int, str]:
    """Each size's tick label on a log axis from lo to hi: written out (``1,000``), or left blank where it would
    touch the label before it (13 and 14 on an axis to 1,000). A label needs about 1.1% of the axis width
    per character, plus a gap."""
    span = math.log10(hi / lo)
    labels: dict[int, str] = {}
    last: tuple[float, str] | None = None
    for v in sorted(set(sizes)):
        text = f"{v:,.0f}"
        x = math.log10(v) / span
        if last is not None and x - last[0] < 0.011 * (len(text) + len(last[1])) / 2 + 0.008:
            labels[v] = ""
            continue
        labels[v], last = text, (x, text)
    return labels


def plot_curves(
    curves: dict[str, Sequence[LengthResult]], path: str | Path, *, train_size: int, title: str = "",
    ylabel: str = "answer exact match",
) -> Path:
    """Accuracy against size on a log x-axis: one solid line per curve (answer exact match), and a dashed one
    for its trajectory exact match only where that differs somewhere (else it would hide under the solid
    line). Curves get distinct markers, shrinking in draw order, so lines that coincide (many models at 100%)
    all stay visible; with more than three curves the legend goes outside, to the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    curves = {k: [r for r in res if not r.drawn_as_in_training] for k, res in curves.items()}
    many = len(curves) > 3
    fig, ax = plt.subplots(figsize=(8.4 if many else 6.4, 4.2), dpi=120)
    markers = "osD^vP*Xh<>p"
    hidden = 0
    for k, (label, res) in enumerate(curves.items()):
        res = sorted(res, key=lambda r: r.size)
        xs = [r.size for r in res]
        ans, traj = [r.answer_acc for r in res], [r.trajectory_acc for r in res]
        size = max(3.0, 9.0 - 0.6 * k)
        (line,) = ax.plot(xs, ans, "-", marker=markers[k % len(markers)], ms=size, mfc="none", mew=1.4,
                          label=label)  # fmt: skip
        if any(abs(a - t) > 1e-9 for a, t in zip(ans, traj)):
            ax.plot(xs, traj, "--", color=line.get_color(), alpha=0.6, label=f"{label}: trajectory EM")
        else:
            hidden += 1
    ax.axvspan(1, train_size, color="grey", alpha=0.12, lw=0, label=f"training sizes (≤ {train_size})")
    ax.set_xscale("log")
    sizes = [r.size for res in curves.values() for r in res] + [train_size]
    ax.set_xlim(min(sizes) / 1.5, max(sizes) * 1.5)
    labels = size_tick_labels(sizes, *ax.get_xlim())
    ax.set_xticks(sorted(labels))  # the measured sizes, written out (no 3x10^0 clutter on short ranges)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: labels.get(round(v), "")))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("problem size (log scale)")
    ax.set_ylabel(ylabel + (" (dashed: trajectory EM)" if hidden < len(curves) else ""))
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if many:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.9)
    else:
        ax.legend(fontsize=8, loc="lower left", framealpha=0.9)
    return save_figure(fig, path)


def save_figure(fig, path: str | Path) -> Path:
    """Lay out, write (creating the folder) and close a matplotlib figure; return its path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def save_results(results: Sequence[LengthResult], path: str | Path, **meta) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**meta, "results": [asdict(r) for r in results]}, indent=2))
    return path
