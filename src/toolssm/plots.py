"""Tables and figures: the paper's ``n→m (p%)`` cell, the text and markdown tables, the accuracy-against-size
plot, and `save_figure` for every figure of the package (evaluate, report, theory).

The rows are `toolssm.evaluate.LengthResult`s (spec, size, answer and trajectory accuracy, ...); this module
reads only their fields, so it sits below everything that makes them. matplotlib is imported on first use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for annotations only: the rows come from evaluate
    from toolssm.evaluate import LengthResult



def interval_text(r: LengthResult) -> str:
    """``84–100%``: the answer accuracy's Wilson 95% interval, as the tables print it."""
    lo, hi = r.answer_interval
    return f"{lo:.0%}–{hi:.0%}".replace("%–", "–")


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
    head = (f"{'size':>8} | {'answer EM':>9} | {'95% CI':>9} | {'traj. EM':>8} | {'token acc':>9} | {'trunc.':>6} | "
            f"{'tokens/prob':>11} | {'time':>7}")  # fmt: skip
    lines = [head, "-" * len(head)]
    for r in results:
        tok = f"{r.token_acc:.2%}" if r.token_acc is not None else "–"
        lines.append(
            f"{r.spec:>8} | {r.answer_acc:>9.0%} | {interval_text(r):>9} | {r.trajectory_acc:>8.0%} | {tok:>9} |"
            f" {r.truncated:>6} | {r.tokens_per_problem:>11,.0f} | {r.seconds:>6.1f}s"
        )
    summary = f"{label + ': ' if label else ''}{paper_cell(train_size, results)}   (paper notation n→m (p%))"
    ci = "95% CI: the answer EM's Wilson score interval over the problems of the size"
    return "\n".join([summary, *lines, ci])


def format_comparison(curves: dict[str, Sequence[LengthResult]], *, train_size: int) -> str:
    """A markdown table: one row per model, the paper's n→m (p%) cell, then answer accuracy per size."""
    specs = list(dict.fromkeys(r.spec for res in curves.values() for r in res))
    head = "| model | n→m (p%) | " + " | ".join(specs) + " |"
    lines = [head, "|" + "---|" * (len(specs) + 2)]
    for label, res in curves.items():
        by = {r.spec: r for r in res}
        cells = [f"{by[s].answer_acc:.0%} ({interval_text(by[s])})" if s in by else "–" for s in specs]
        lines.append(f"| {label} | {paper_cell(train_size, res)} | " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", "Per size: answer exact match (its Wilson 95% interval)."])


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


def _draw_curves(
    ax, curves: dict[str, Sequence[LengthResult]], train_size: int, *, first_marker: int = 0,
) -> tuple[int, bool, bool]:
    """Draw ``curves`` on one axes (answer EM solid with its Wilson band, trajectory EM dashed where it differs) on
    the shared log size axis. Sizes a run did not test (``n == 0``: its evaluation stopped below 5% at a smaller
    size) are not points of the line: a dotted tail ends in crosses at 0. Returns (how many curves had no dashed
    line, whether any band was drawn, whether any size was not run)."""
    import matplotlib.ticker

    markers = "osD^vP*Xh<>p"
    hidden, bands, unrun = 0, False, False
    for k, (label, res) in enumerate(curves.items(), start=first_marker):
        res = sorted(res, key=lambda r: r.size)
        skipped = [r.size for r in res if r.n == 0]  # not run: the evaluation stopped below 5% at a smaller size
        res = [r for r in res if r.n > 0]
        xs = [r.size for r in res]
        ans, traj = [r.answer_acc for r in res], [r.trajectory_acc for r in res]
        size = max(3.0, 9.0 - 0.6 * k)
        (line,) = ax.plot(xs, ans, "-", marker=markers[k % len(markers)], ms=size, mfc="none", mew=1.4,
                          label=label, color=f"C{k % 10}")  # fmt: skip
        band = [(x, *r.answer_interval) for x, r in zip(xs, res) if r.n > 0]  # Wilson 95%, where measured
        if band:
            ax.fill_between([b[0] for b in band], [b[1] for b in band], [b[2] for b in band],
                            color=line.get_color(), alpha=0.12, lw=0)  # fmt: skip
            bands = True
        if any(abs(a - t) > 1e-9 for a, t in zip(ans, traj)):
            ax.plot(xs, traj, "--", color=line.get_color(), alpha=0.6, label=f"{label}: trajectory EM")
        else:
            hidden += 1
        if skipped:  # a faint dotted tail with crosses, so an untested size never reads as a measured 0%
            tail = xs[-1:] + skipped
            ax.plot(tail, ans[-1:] + [0.0] * len(skipped), ":", color=line.get_color(), alpha=0.45, lw=1.0)
            ax.plot(skipped, [0.0] * len(skipped), "x", color=line.get_color(), alpha=0.6, ms=5, gid="not-run")
            unrun = True
    ax.axvspan(1, train_size, color="grey", alpha=0.12, lw=0, label=f"training sizes (≤ {train_size})")
    ax.set_xscale("log")
    sizes = [r.size for res in curves.values() for r in res] + [train_size]
    ax.set_xlim(min(sizes) / 1.5, max(sizes) * 1.5)
    labels = size_tick_labels(sizes, *ax.get_xlim())
    ax.set_xticks(sorted(labels))  # the measured sizes, written out (no 3x10^0 clutter on short ranges)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: labels.get(round(v), "")))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_ylim(-0.03, 1.03)
    ax.grid(True, which="both", alpha=0.3)
    return hidden, bands, unrun


def plot_curves(
    curves: dict[str, Sequence[LengthResult]], path: str | Path, *, train_size: int, title: str = "",
    ylabel: str = "answer exact match",
) -> Path:
    """Accuracy against size on a log x-axis: one solid line per curve (answer exact match) in its Wilson 95% band,
    and a dashed one for its trajectory exact match only where that differs somewhere (else it would hide under
    the solid line). Curves get distinct markers, shrinking in draw order, so lines that coincide stay visible;
    with more than three curves the legend goes outside, to the right. Past `SMALL_MULTIPLES` curves, where most
    would sit on top of each other, use `plot_small_multiples`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {k: [r for r in res if not r.drawn_as_in_training] for k, res in curves.items()}
    many = len(curves) > 3
    fig, ax = plt.subplots(figsize=(8.4 if many else 6.4, 4.2), dpi=120)
    hidden, bands, unrun = _draw_curves(ax, curves, train_size)
    ax.set_xlabel("problem size (log scale)")
    ax.set_ylabel(ylabel + (" (dashed: trajectory EM)" if hidden < len(curves) else ""))
    if bands:  # one legend entry for every curve's band
        ax.fill_between([], [], [], color="grey", alpha=0.25, lw=0, label="shaded: Wilson 95% interval")
    if unrun:
        ax.plot([], [], "x:", color="grey", label="not run (stopped below 5% at a smaller size)")
    ax.set_title(title, fontsize=10)
    if many:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.9)
    else:
        ax.legend(fontsize=8, loc="lower left", framealpha=0.9)
    return save_figure(fig, path)


#: more curves than this go to one panel each (`plot_small_multiples`): on one axes, most would coincide
SMALL_MULTIPLES = 4


def plot_small_multiples(
    curves: dict[str, Sequence[LengthResult]], path: str | Path, *, train_size: int, title: str = "", cols: int = 3,
) -> Path:
    """One panel per curve, on shared axes, so curves that coincide (many models at 100%) each stay visible: Figure 2
    with nine architectures. Each panel has its curve's band, its trajectory EM where it differs and its ``n→m``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {k: [r for r in res if not r.drawn_as_in_training] for k, res in curves.items()}
    rows = -(-len(curves) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.5 * rows + 0.5), dpi=120, sharex=True, sharey=True,
                             squeeze=False)  # fmt: skip
    unrun = False
    for k, (label, res) in enumerate(curves.items()):
        ax = axes[k // cols][k % cols]
        unrun |= _draw_curves(ax, {label: res}, train_size, first_marker=k)[2]
        ax.set_title(f"{label}: {paper_cell(train_size, res)}", fontsize=9)
        ax.tick_params(labelsize=7)
    for k in range(len(curves), rows * cols):
        axes[k // cols][k % cols].axis("off")
    for row in axes:
        row[0].set_ylabel("answer EM", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("size (log)", fontsize=8)
    key = "shaded: Wilson 95% interval; grey: training sizes; dashed: trajectory EM where it differs"
    if unrun:
        key += "\ndotted to ×: not run (stopped below 5% at a smaller size)"
    fig.suptitle(f"{title}\n{key}", fontsize=9)
    return save_figure(fig, path)


def plot_training_curve(rows: Sequence[dict], path: str | Path, *, title: str = "") -> Path:
    """Answer exact match (solid) and trajectory exact match (dashed, where it differs) against the training
    step, one colour per evaluated size: when, during training, a model starts to generalize to each size.
    ``rows``: evaluation rows of a metrics log (``step``, ``eval_size``, ``answer_acc``, ``trajectory_acc``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(str(r["eval_size"]), []).append(r)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    markers = "osD^vP*Xh<>p"
    for k, (spec, rs) in enumerate(by.items()):
        rs = sorted({r["step"]: r for r in rs}.values(), key=lambda r: r["step"])  # a step logged twice: the last
        xs, ans, traj = [r["step"] for r in rs], [r["answer_acc"] for r in rs], [r["trajectory_acc"] for r in rs]
        (line,) = ax.plot(xs, ans, "-", marker=markers[k % len(markers)], ms=max(3.0, 7.0 - 0.6 * k), mfc="none",
                          label=f"size {spec}")  # fmt: skip
        if any(abs(a - t) > 1e-9 for a, t in zip(ans, traj)):
            ax.plot(xs, traj, "--", color=line.get_color(), alpha=0.6)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("training step")
    ax.set_ylabel("answer exact match (dashed: trajectory EM)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best", framealpha=0.9)
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
