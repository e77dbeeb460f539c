"""Reports from sweep records alone: paper-style tables, the paper's numbers beside ours, one plot per figure.

Two views of each row (a model, an ablation, a grid point), over all of its runs:

- **best**: the best run over the hyperparameter grid and the seeds, as the paper reports. Runs are
  ranked by the paper's cell ``n→m (p%)``: the largest size m with answer accuracy ≥ 5%, then p, then
  the mean accuracy over the sizes.
- **all seeds**: the seeds of the best run's hyperparameters: the per-size median answer accuracy (its
  ``n→m (p%)`` cell) and the fraction of seeds that generalize, i.e. reach at least ``generalize``
  (default 90%) answer accuracy at the largest tested size.

Sizes a run skipped (its evaluation stopped once a smaller size fell below 5%) count as 0% in the cells; the plots
draw them apart, as not run.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tyro

from toolssm.evaluate import LengthResult
from toolssm.paper_results import PAPER_NOTES, paper_value
from toolssm.paths import check_out
from toolssm.plots import SMALL_MULTIPLES, interval_text, paper_cell, plot_curves, plot_small_multiples
from toolssm.records import curve, results, run_cell
from toolssm.sweep import load_records
from toolssm.tasks.base import TRAINING_DRAW


#: the record fields a report reads
REPORT_FIELDS = ("task", "train_size", "seed", "config", "lengths", "n_problems", "wall_s")


def _rank(rec: dict[str, Any]) -> tuple:
    res = curve(rec)
    ok = [r for r in res if r.size >= rec["train_size"] and r.answer_acc >= 0.05]
    top = max(ok, key=lambda r: r.size) if ok else None
    mean = sum(r.answer_acc for r in res) / max(1, len(res))
    return (top.size if top else -1, top.answer_acc if top else 0.0, mean, -rec["seed"])


def _hyper(rec: dict[str, Any]) -> str:
    """The run's configuration without its seed: the seeds of one grid point share it."""
    cfg = {k: v for k, v in rec["config"].items() if k != "seed"}
    return json.dumps(cfg, sort_keys=True)


@dataclass
class RowSummary:
    experiment: str
    panel: str
    row: str
    train_size: int
    best: dict[str, Any]
    seeds: list[dict[str, Any]]
    """the records of the best run's hyperparameters, one per seed"""
    all: list[dict[str, Any]]
    """every record of the row"""
    n_runs: int
    generalize: float

    @property
    def best_cell(self) -> str:
        return run_cell(self.best)

    def median_curve(self) -> list[LengthResult]:
        by: dict[str, list[LengthResult]] = defaultdict(list)
        for rec in self.seeds:
            for r in curve(rec):
                by[r.spec].append(r)
        out = []
        for spec, rs in by.items():
            out.append(LengthResult(
                spec, rs[0].size, sum(r.n for r in rs), statistics.median(r.answer_acc for r in rs),
                statistics.median(r.trajectory_acc for r in rs), None, sum(r.truncated for r in rs), 0.0, 0.0,
            ))  # fmt: skip
        return sorted(out, key=lambda r: r.size)

    @property
    def median_cell(self) -> str:
        return paper_cell(self.train_size, self.median_curve())

    @property
    def worst_cell(self) -> str:
        """The paper's cell of the worst seed (ranked as the best run is: largest size reached, then accuracy)."""
        return run_cell(min(self.seeds, key=_rank))

    @property
    def n_generalize(self) -> int:
        k = 0
        for rec in self.seeds:
            res = curve(rec)
            top = max(res, key=lambda r: r.size)
            k += top.answer_acc >= self.generalize
        return k

    @property
    def paper(self) -> str:
        return paper_value(self.experiment, self.panel, self.row)


def summarize(records: list[dict[str, Any]], *, generalize: float = 0.9) -> list[RowSummary]:
    """One summary per (experiment, panel, row), in the order the records first name them."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for rec in records:
        groups[(rec["experiment"], rec.get("panel", ""), rec["row"])].append(rec)
    out = []
    for (exp, panel, row), recs in groups.items():
        best = max(recs, key=_rank)
        seeds = sorted((r for r in recs if _hyper(r) == _hyper(best)), key=lambda r: r["seed"])
        out.append(RowSummary(exp, panel, row, best["train_size"], best, seeds, recs, len(recs), generalize))
    return out


def _order(records: list[dict[str, Any]], root: Path) -> list[dict[str, Any]]:
    """Records in the sweep's planned order (sweep.json), so tables follow the paper's rows."""
    plan = _plan(root)
    if plan is None:
        return records
    pos = {r["run_id"]: i for i, r in enumerate(plan)}
    return sorted(records, key=lambda r: pos.get(r["run_id"], len(pos)))


def _plan(root: Path) -> list[dict[str, Any]] | None:
    """The sweep's planned runs (sweep.json), None without one; a one-line error naming a malformed one."""
    path = root / "sweep.json"
    if not path.is_file():
        return None
    try:
        plan = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        plan = None
    if not isinstance(plan, list) or not all(isinstance(r, dict) and isinstance(r.get("run_id"), str) for r in plan):
        raise ValueError(f"bad {path}: not a sweep's plan (a JSON list of runs, each with its run_id)")
    return plan


def format_report(rows: list[RowSummary], *, planned: int | None = None) -> str:
    """Markdown: per experiment, one table with the paper's cell beside ours and accuracy per size."""
    parts = []
    for exp in dict.fromkeys(r.experiment for r in rows):
        mine = [r for r in rows if r.experiment == exp]
        specs = list(dict.fromkeys(s for r in mine for s in r.best["lengths"]))
        n_rec = sum(r.n_runs for r in mine)
        parts.append(f"## {exp}\n")
        has_panel = any(r.panel for r in mine)
        head = [*["panel"] * has_panel, "row", "ours: best", "paper", "all seeds: median", "worst seed",
                f"seeds ≥ {mine[0].generalize:.0%} at largest",
                *(f"{s} as trained" if s.startswith(TRAINING_DRAW) else s for s in specs)]  # fmt: skip
        parts += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in mine:
            by = {x.spec: x for x in results(r.best)}
            cells = [_cell(by[s], r.best["n_problems"]) if s in by else " " for s in specs]
            line = [*[r.panel] * has_panel, r.row, r.best_cell, r.paper, r.median_cell, r.worst_cell,
                    f"{r.n_generalize}/{len(r.seeds)}", *cells]  # fmt: skip
            parts.append("| " + " | ".join(line) + " |")
        notes = [
            f"{n_rec} finished runs" + (f" of {planned} planned" if planned is not None else "") + ". "
            "Per-size columns: answer exact match of the best run, with its Wilson 95% interval (n: problems done, "
            "when the time cap cut a size short); – : not run (a smaller size was already below 5%)."
            + (" '<=N as trained': problems drawn as in training, every size up to N mixed (in distribution); "
               "not a point of the length axis, so not in n→m." if any(s.startswith(TRAINING_DRAW) for s in specs)
               else "")
        ]
        if exp in PAPER_NOTES:
            notes.append(PAPER_NOTES[exp])
        notes.append(_wall_time([rec for r in mine for rec in r.all]))
        parts.append("\n" + "\n\n".join(notes) + "\n")
    return "\n".join(parts)


def _wall_time(records: list[dict[str, Any]]) -> str:
    """The sweep's wall time, from the records' start and end times, and the runs' summed time."""
    total = sum(r["wall_s"] for r in records)
    timed = [r for r in records if "started_at" in r and "ended_at" in r]
    if not timed:
        return f"Runs' time: {total:.0f}s summed over {len(records)} runs (train + eval)."
    span = max(r["ended_at"] for r in timed) - min(r["started_at"] for r in timed)
    jobs = max((r.get("jobs", 1) for r in timed), default=1)
    train, ev = sum(r["train_s"] for r in records) / 60, sum(r["eval_s"] for r in records) / 60
    return (f"Wall time: {span / 60:.1f} min from the first run's start to the last run's end ({jobs} at a time; "
            f"includes any pause of a resumed sweep); {total / 60:.1f} min summed over {len(records)} runs "
            f"(train {train:.1f}, eval {ev:.1f}).")  # fmt: skip


def _cell(r: LengthResult, planned: int) -> str:
    if r.n == 0:
        return "–"
    return f"{r.answer_acc:.0%} ({interval_text(r)})" + (f" (n={r.n})" if r.n < planned else "")


def plot_report(rows: list[RowSummary], out: Path) -> list[Path]:
    """One PNG per experiment panel: the best run of each row."""
    paths = []
    for key in dict.fromkeys((r.experiment, r.panel) for r in rows):
        mine = [r for r in rows if (r.experiment, r.panel) == key]
        name = "-".join(x for x in key if x)
        train = min(r.train_size for r in mine)
        task = mine[0].best["task"]
        curves = {r.row: sorted(curve(r.best), key=lambda x: x.size) for r in mine}
        draw = plot_small_multiples if len(curves) > SMALL_MULTIPLES else plot_curves
        paths.append(draw(curves, out / f"{name}.png", train_size=train, title=f"{name} ({task}): best run per row"))
    return paths


def report(root: str | Path, *, generalize: float = 0.9, plots: bool = True) -> tuple[str, list[Path]]:
    """Write report.md (and the plots) into ``root`` from its records alone; return the text and files."""
    root = Path(root)
    folders = [root] if (root / "records").is_dir() or (root / "results.jsonl").is_file() else sorted(
        p for p in root.iterdir() if p.is_dir() and ((p / "records").is_dir() or (p / "results.jsonl").is_file())
    ) if root.is_dir() else []  # fmt: skip
    if not folders and (root / "log.jsonl").is_file():  # a training run: its evaluations against the step
        return training_report(root, plots=plots)
    if not folders:
        why = "the path does not exist" if not root.exists() else "expected records/ or results.jsonl in it or below"
        raise ValueError(f"no sweep records under {root}: {why}")
    for folder in folders:  # report.md and the plots go beside the records
        check_out(str(folder), "sweep folder")
    texts, files = [], []
    for folder in folders:
        records = _order(load_records(folder, require=REPORT_FIELDS), folder)
        if not records:
            raise ValueError(f"no sweep records in {folder}: its results.jsonl is empty")
        plan = _plan(folder)
        planned = len(plan) if plan is not None else None
        rows = summarize(records, generalize=generalize)
        text = format_report(rows, planned=planned)
        (folder / "report.md").write_text(text)
        files.append(folder / "report.md")
        if plots:
            files += plot_report(rows, folder)
        texts.append(text)
    return "\n".join(texts), files


def training_report(run: Path, *, plots: bool = True) -> tuple[str, list[Path]]:
    """A training run's evaluations (``--eval-every``): answer EM per size against the step, as a table
    (eval_curve.md) and a plot (eval_curve.png)."""
    from toolssm.plots import plot_training_curve
    from toolssm.loggers import read_log

    rows = [r for r in read_log(run / "log.jsonl") if "eval_size" in r]
    if not rows:
        raise ValueError(f"no evaluations in {run / 'log.jsonl'}: train with --eval-every N to record them")
    table: dict[int, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        table[r["step"]][str(r["eval_size"])] = r
    sizes = list(dict.fromkeys(str(r["eval_size"]) for r in rows))
    lines = ["| step | " + " | ".join(f"size {s}" for s in sizes) + " |", "|" + "---|" * (len(sizes) + 1)]
    for step in sorted(table):
        cells = [f"{table[step][s]['answer_acc']:.0%}" if s in table[step] else "–" for s in sizes]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    text = f"answer exact match during training ({run})\n\n" + "\n".join(lines) + "\n"
    (run / "eval_curve.md").write_text(text)
    files = [run / "eval_curve.md"]
    if plots:
        files.append(plot_training_curve(rows, run / "eval_curve.png", title=f"{run.name}: accuracy during training"))
    return text, files


@dataclass
class ReportConfig:
    """Rebuild the paper-style tables and plots of a sweep folder (or of every sweep folder under it)."""

    results: tyro.conf.Positional[str]
    """a sweep folder (records/ or results.jsonl), e.g. runs/reproduce/fig2-addition-cpu, or a training run
    folder trained with --eval-every (its accuracy against the training step)"""
    generalize: float = 0.9
    """a seed generalizes when its answer accuracy at the largest tested size is at least this"""
    plots: bool = True
    """also draw the plots (PNG)"""


def run_report(cfg: ReportConfig) -> int:
    if not 0 < cfg.generalize <= 1:
        raise ValueError(f"bad generalize={cfg.generalize}: must be in (0, 1]")
    text, files = report(cfg.results, generalize=cfg.generalize, plots=cfg.plots)
    print(text)
    print(f"wrote {', '.join(str(f) for f in files)}")
    return 0
