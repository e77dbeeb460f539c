"""One command per item of the paper: ``toolssm reproduce EXPERIMENT --scale cpu|paper`` = sweep + report.

`EXPERIMENTS` names each table and figure. An experiment is a list of rows (a model, an ablation, a grid
point; optionally grouped into panels), each a task at a training size with training overrides, and the
sizes to test. A scale turns the rows into runs:

- ``cpu``: the demo recipe (cpu model presets, AdamW 3e-3, batch 32), one seed, 20 problems per size in
  batches of 20 for a fixed-state model, 5 for a growing one (`CPU_EVAL_BATCH`). Two caps keep the
  evaluation cost bounded: it stops once a size falls below 5% (a model at 0% at 100 digits is not
  expected to recover at 1,000), and at each size no new batch starts after `CPU_EVAL_LIMIT` seconds
  (full attention, pythia and hybrid, reads its whole KV cache at each of the ~36K decode steps of a
  1,000-digit addition); the record's ``n`` says how many problems were done.
  Meant for the 2-core machine (see docs/reproduce.md for wall times).
- ``paper``: the paper's model presets and grid (App. C: lr × batch × weight decay, 2,000 steps, 2 seeds,
  10 for Hanoi's Mamba and Pythia, 3 for its others), 100 problems per size, every size evaluated.
  Meant for GPUs.

Results go to ``runs/reproduce/<experiment>-<scale>/`` (see `toolssm.sweep` for the layout); a rerun
skips finished runs and resumes interrupted ones. ``toolssm report`` rebuilds the tables and plots from
the records alone.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tyro

from toolssm.models import ModelConfig, has_fixed_state
from toolssm.report import report
from toolssm.sweep import Run, expand_grid, parse_overrides, record_path, set_dotted, sweep
from toolssm.tasks import get_task
from toolssm.train import TrainConfig, check_device, check_out

#: the paper's synthetic-task grid (App. C). Its printed lr list repeats 0.0005; these are the 6 distinct values.
PAPER_GRID: dict[str, tuple] = {
    "lr": (1e-4, 3e-4, 5e-4, 1e-3, 3e-3, 5e-3),
    "batch_size": (128, 256, 512, 1024),
    "weight_decay": (0.0, 0.01),
}
PAPER_STEPS = 2000

#: relative cost of a run per architecture on one CPU thread, for scheduling only (longest first): the
#: measured train + eval seconds of `fig2-addition --scale cpu` (docs/reproduce.md), the LSTM's = 1
CPU_COST = {"lstm": 1.0, "pythia": 1.3, "gru": 1.4, "mistral": 1.6, "mamba": 1.9, "mamba2": 2.0, "hybrid": 3.7,
            "gated_deltanet": 3.9, "rmt": 2.5}  # fmt: skip

#: cpu scale: per size, no new evaluation batch starts after this many seconds (full attention at 1,000
#: digits reads its whole KV cache at every one of ~36K decode steps)
CPU_EVAL_LIMIT = 240.0
#: cpu scale evaluation batch: small for a growing state, so that the time cap can cut it short; large for a
#: fixed state, whose per-token cost is mostly Python overhead (a Mamba at 1,000 digits: 47 s for 20
#: problems in one batch against 103 s in batches of 5)
CPU_EVAL_BATCH = {"fixed": 20, "growing": 5}

BASELINES = ("mamba", "lstm", "gru", "pythia", "mistral")
FIG2_MODELS = ("mamba", "lstm", "gru", "mamba2", "gated_deltanet", "hybrid", "pythia", "mistral")


@dataclass(frozen=True)
class Row:
    row: str
    task: str
    train_size: int
    train: dict[str, Any] = field(default_factory=dict)
    """training overrides, dotted keys allowed (``model.arch``, ``steps``, ``mix``)"""
    panel: str = ""
    cpu: dict[str, Any] = field(default_factory=dict)
    """more overrides at the cpu scale only: a row's measured recipe where the demo recipe is not enough"""

    @property
    def arch(self) -> str:
        return self.train.get("model.arch", "lstm")


@dataclass(frozen=True)
class Experiment:
    name: str
    what: str
    """the paper item it reproduces"""
    rows: tuple[Row, ...]
    lengths: dict[str, tuple[str, ...]]
    """sizes to test per scale (``cpu``, ``paper``); a panel may override with ``cpu:PANEL`` keys"""
    cpu_seeds: tuple[int, ...] = (1,)
    paper_seeds: tuple[int, ...] = (0, 1)
    paper_seed_override: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """seeds per architecture at paper scale (Hanoi: 10 for Mamba and Pythia)"""
    paper_grid: dict[str, tuple] = field(default_factory=lambda: dict(PAPER_GRID))
    cpu_note: str = ""
    requires: str = ""
    """a module that must exist (experiments whose task or command is built elsewhere)"""
    command: str = ""
    """not a sweep: the toolssm command that produces it"""

    def sizes(self, scale: str, panel: str) -> tuple[str, ...]:
        return self.lengths.get(f"{scale}:{panel}", self.lengths[scale])


def _models(task: str, train_size: int, archs=BASELINES, panel: str = "", **extra) -> tuple[Row, ...]:
    return tuple(Row(a, task, train_size, {"model.arch": a, **extra}, panel) for a in archs)


_MULT_LEN = {"cpu": ("10", "13", "14", "20", "100", "500", "1000"),
             "paper": ("10", "13", "14", "20", "100", "500", "1000")}  # fmt: skip
_GRAPH_LEN = {"cpu": ("10", "20", "50", "100", "500", "1000"), "paper": ("10", "20", "50", "100", "500", "1000")}
_HREC_LEN = {"cpu": ("7", "8", "9", "10"), "paper": ("7", "8", "9", "10", "11", "12")}

EXPERIMENTS: dict[str, Experiment] = {}


def _add(e: Experiment) -> None:
    EXPERIMENTS[e.name] = e


_add(Experiment(
    "fig2-addition", "Figure 2: addition with the pointer tool, every architecture, trained on ≤ 5 digits",
    (*_models("addition", 5, FIG2_MODELS),
     Row("mistral-w16", "addition", 5, {"model.arch": "mistral", "model.window": 16})),
    {"cpu": ("5", "10", "100", "1000"), "paper": ("5", "10", "20", "50", "100", "200", "500", "1000")},
    cpu_note="2 at a time: 55 min measured on the 2-core CPU (docs/reproduce.md)",
))  # fmt: skip
_add(Experiment("table1-mult-x1", "Table 1: n×1 multiplication, trained on ≤ 10 digits",
                _models("multiplication-x1", 10), _MULT_LEN))  # fmt: skip
_add(Experiment("table1-mult-x2", "Table 1: n×2 multiplication, trained on ≤ 10 digits",
                _models("multiplication-x2", 10), _MULT_LEN))  # fmt: skip
_add(Experiment("table1-logic-graph", "Table 1: logical graph with the search tool, trained on ≤ 10 nodes",
                _models("logic-graph", 10), _GRAPH_LEN))  # fmt: skip
_add(Experiment(
    "table1-hanoi",
    "Table 1: iterative Tower of Hanoi, trained on ≤ 8 disks (ours: local policy; the paper's scheme)",
    (*_models("hanoi", 8, panel="hanoi"), *_models("hanoi-paper", 8, panel="hanoi-paper")),
    {"cpu": ("8", "9", "10"), "paper": ("8", "9", "10", "11", "12")},
    paper_seed_override={"mamba": tuple(range(10)), "pythia": tuple(range(10)), "*": (0, 1, 2)},
))  # fmt: skip
_add(Experiment("table2-hanoi-recursive", "Table 2: recursive Tower of Hanoi, trained on ≤ 7 disks",
                _models("hanoi-recursive", 7), _HREC_LEN,
                paper_seed_override={"mamba": tuple(range(10)), "pythia": tuple(range(10)),
                                     "*": (0, 1, 2)}))  # fmt: skip
_add(Experiment(
    "fig6-baselines", "Figure 6: baseline curves for ×1, ×2, logical graph and recursive Hanoi",
    (*_models("multiplication-x1", 10, panel="x1"), *_models("multiplication-x2", 10, panel="x2"),
     *_models("logic-graph", 10, panel="logic-graph"), *_models("hanoi-recursive", 7, panel="hanoi-recursive")),
    {**_MULT_LEN, "cpu:logic-graph": _GRAPH_LEN["cpu"], "paper:logic-graph": _GRAPH_LEN["paper"],
     "cpu:hanoi-recursive": _HREC_LEN["cpu"], "paper:hanoi-recursive": _HREC_LEN["paper"]},
))  # fmt: skip
_add(Experiment(
    "d6-mult-grid", "App. D.6: Mamba on n×1 and n×2 multiplication, training steps × training digits (lr 0.003)",
    tuple(Row(f"{d} digits, {s} steps", task, d, {"model.arch": "mamba", "steps": s, "lr": 0.003}, panel)
          for panel, task in (("x1", "multiplication-x1"), ("x2", "multiplication-x2"))
          for d in (5, 10, 20) for s in (250, 500, 800)),
    {"cpu": ("20", "100", "1000"), "paper": ("20", "50", "100", "200", "500", "1000")},
    cpu_seeds=(0,), paper_seeds=tuple(range(5)), paper_grid={},
))  # fmt: skip
#: d7 at the cpu scale: the recipes measured to reach the paper's "fine in distribution" with the cpu preset
#: (docs/tasks/addition-ablations.md); the demo recipe (2,500 steps of 32) leaves direct at 0% even at 5 digits
_D7_CPU = {"direct": {"steps": 30000, "batch_size": 256}, "reversed": {"steps": 8000, "batch_size": 256},
           "no tool": {"steps": 2000, "batch_size": 64}, "calculator": {"steps": 3000, "batch_size": 256}}  # fmt: skip
_add(Experiment(
    "d7-addition-ablations",
    "App. D.7: Mamba addition without the pointer tool (direct, reversed, no tool, calculator)",
    tuple(Row(label, task, 5, {"model.arch": "mamba"}, cpu=_D7_CPU.get(label, {})) for label, task in (
        ("pointer tool", "addition"), ("direct", "addition-direct"), ("reversed", "addition-reversed"),
        ("no tool", "addition-notool"), ("calculator", "addition-calculator"))),
    {"cpu": ("<=5", "5", "6", "7", "10", "100", "1000"),
     "paper": ("<=5", "5", "10", "20", "50", "100", "200", "500", "1000")},
    cpu_note="2 at a time, with each ablation's measured recipe: about 1.6 h of wall time, the direct "
             "row's 30,000 steps of 256 (93 min) beside the other four (30 min measured; "
             "docs/tasks/addition-ablations.md)",
))  # fmt: skip
_add(Experiment(
    "d8-mixture", "App. D.8: n×2 multiplication (≤ 20 digits) mixed with addition, weight w, by training steps",
    tuple(Row(f"w={w}", "multiplication-x2", 20,
              {"model.arch": "mamba", "steps": s, "lr": 0.003, "mix": [f"addition:{w}"] if w else []}, f"{s} steps")
          for s in (250, 500, 800) for w in (0, 0.33, 0.5, 0.6)),
    {"cpu": ("20", "100", "1000"), "paper": ("20", "50", "100", "200", "500", "1000")},
    cpu_seeds=(0,), paper_seeds=(0, 1, 2), paper_grid={},
))  # fmt: skip
_add(Experiment(
    "fig1-codefix", "Figure 1: code fixing (interactive agent), Mamba vs Pythia, trained on ≤ 16 functions",
    _models("codefix", 16, ("mamba", "pythia")),
    {"cpu": ("4", "8", "16", "24", "30"), "paper": ("4", "8", "12", "16", "20", "24", "30")},
    requires="toolssm.tasks.codefix",
))  # fmt: skip
_add(Experiment(
    "fig3-oolong",
    "Figure 3 [camera-ready]: Oolong-style aggregation with a retrieval tool, trained on ≤ 5 examples "
    "(synthetic examples, models from scratch: docs/tasks/oolong.md)",
    _models("oolong", 5, ("mamba", "pythia", "lstm")),
    {"cpu": ("<=5", "5", "10", "15", "20", "25", "100", "1000"),
     "paper": ("<=5", "5", "10", "15", "20", "25", "100", "1000")},
))  # fmt: skip
_add(Experiment(
    "d9-rmt", "App. D.9 [camera-ready]: a Recurrent Memory Transformer on addition at two segment lengths, "
    "trained on ≤ 5 digits",
    tuple(Row(f"rmt-s{s}", "addition", 5, {"model.arch": "rmt", "model.segment": s}) for s in (16, 64)),
    {"cpu": ("5", "10", "100", "1000"), "paper": ("5", "10", "20", "50", "100", "200", "500", "1000")},
))  # fmt: skip
_add(Experiment("theory", "Theorems 2.1 and 2.2: the executable theory demonstrations", (), {"cpu": (), "paper": ()},
                requires="toolssm.theory", command="theory"))  # fmt: skip


def plan(exp: Experiment, scale: str, *, rows: tuple[str, ...] = (), seeds: tuple[int, ...] = (),
         lengths: tuple[str, ...] = (), n_problems: int | None = None, overrides: dict[str, Any] | None = None,
         device: str = "auto") -> list[Run]:  # fmt: skip
    """The experiment's runs at a scale: rows × grid × seeds, with the given restrictions and overrides."""
    if scale not in ("cpu", "paper"):
        raise ValueError(f"unknown scale {scale!r} (choose from: cpu, paper)")
    known = {r.row for r in exp.rows}
    for r in rows:
        if r not in known:
            raise ValueError(f"experiment {exp.name} has no row {r!r} (it has: {', '.join(sorted(known))})")
    runs = []
    for row in exp.rows:
        if rows and row.row not in rows:
            continue
        base: dict[str, Any] = {"task": row.task, "train_size": row.train_size, "model": {"preset": scale}}
        if scale == "paper":
            base["steps"] = PAPER_STEPS
        for k, v in (row.train | row.cpu if scale == "cpu" else row.train).items():
            base = set_dotted(base, k, v)
        base = set_dotted(base, "device", device)
        grid = exp.paper_grid if scale == "paper" else {}
        grid = {k: v for k, v in grid.items() if k not in (overrides or {})}  # --set pins that axis
        if scale == "paper":
            row_seeds = exp.paper_seed_override.get(row.arch, exp.paper_seed_override.get("*", exp.paper_seeds))
        else:
            row_seeds = exp.cpu_seeds
        for cfg in expand_grid(base, grid):
            for k, v in (overrides or {}).items():
                cfg = set_dotted(cfg, k, v)
            for seed in seeds or row_seeds:
                train = set_dotted(cfg, "seed", seed)
                if scale == "paper" and "warmup" not in train:
                    train["warmup"] = min(100, train.get("steps", PAPER_STEPS) // 10)
                runs.append(Run(
                    experiment=exp.name, row=row.row, panel=row.panel, train=train,
                    lengths=tuple(lengths) or exp.sizes(scale, row.panel),
                    n_problems=n_problems or (20 if scale == "cpu" else 100),
                    stop_below=0.05 if scale == "cpu" else None, cost=_cost(row.arch, train), scale=scale,
                    eval_batch_size=_eval_batch(train) if scale == "cpu" else 100,
                    eval_time_limit=CPU_EVAL_LIMIT if scale == "cpu" else None,
                ))  # fmt: skip
    return runs


def _cost(arch: str, train: dict[str, Any]) -> float:
    """The scheduling hint: the architecture's relative cost times the problems trained on, against the
    demo recipe's (which `CPU_COST` was measured with)."""
    demo = TrainConfig()
    return CPU_COST.get(arch, 1.0) * (train.get("steps", demo.steps) * train.get("batch_size", demo.batch_size)
                                      / (demo.steps * demo.batch_size))  # fmt: skip


def _eval_batch(train: dict[str, Any]) -> int:
    model = ModelConfig(**train.get("model", {}))
    return CPU_EVAL_BATCH["fixed" if has_fixed_state(model) else "growing"]


@dataclass
class ReproduceConfig:
    """Reproduce one table or figure of the paper: run its sweep (resumable), then write its report."""

    experiment: tyro.conf.Positional[str]
    """one of: fig2-addition, table1-mult-x1, table1-mult-x2, table1-logic-graph, table1-hanoi,
    table2-hanoi-recursive, fig6-baselines, d6-mult-grid, d7-addition-ablations, d8-mixture, fig1-codefix,
    fig3-oolong, d9-rmt, theory; or `list`"""
    scale: Literal["cpu", "paper"] = "cpu"
    """cpu: the 2-core recipe; paper: the paper's presets and grid (for GPUs)"""
    out: str | None = None
    """sweep folder (default runs/reproduce/EXPERIMENT-SCALE); a rerun continues where it stopped"""
    jobs: int = 2
    """runs at once, each in its own process with one torch thread"""
    rows: tuple[str, ...] = ()
    """only these rows (e.g. models); default all"""
    seeds: tuple[int, ...] = ()
    """override the scale's seeds"""
    lengths: tuple[str, ...] = ()
    """override the sizes to test"""
    n_problems: int | None = None
    """override the problems per size"""
    set: tuple[str, ...] = ()
    """training overrides for every run, key=value (e.g. steps=100 model.d_model=32)"""
    device: str = "auto"
    dry_run: bool = False
    """list the runs (done or to do) and stop"""


def describe() -> str:
    lines = ["experiments (toolssm reproduce NAME --scale cpu|paper):"]
    for e in EXPERIMENTS.values():
        lines.append(f"  {e.name:<24} {e.what}")
    return "\n".join(lines)


def run_reproduce(cfg: ReproduceConfig) -> int:
    if cfg.experiment == "list":
        print(describe())
        return 0
    if cfg.experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {cfg.experiment!r} (choose from: {', '.join(EXPERIMENTS)})")
    exp = EXPERIMENTS[cfg.experiment]
    if cfg.n_problems is not None and cfg.n_problems < 1:
        raise ValueError(f"bad --n-problems {cfg.n_problems}: must be positive")
    if cfg.jobs < 1:
        raise ValueError(f"bad --jobs {cfg.jobs}: must be positive")
    check_device(cfg.device)
    if cfg.out:
        check_out(cfg.out)
    if exp.requires and importlib.util.find_spec(exp.requires) is None:
        raise ValueError(f"{exp.name} is not available yet: it needs {exp.requires}, which is not in this build")
    if exp.command:
        from toolssm.cli import COMMANDS  # here: cli imports this module

        if exp.command not in COMMANDS:
            raise ValueError(f"{exp.name} is not available yet: `toolssm {exp.command}` is not in this build")
        cls, fn = COMMANDS[exp.command]
        unused = [f"--{k.replace('_', '-')}" for k in ("rows", "seeds", "lengths", "n_problems", "set")
                  if getattr(cfg, k) not in ((), None)]  # fmt: skip
        if cfg.scale != "cpu":
            unused.append("--scale")
        if unused:
            raise ValueError(f"{exp.name} runs `toolssm {exp.command}`, which has no sweep: {' '.join(unused)} "
                             f"do not apply (see `toolssm {exp.command} --help`)")  # fmt: skip
        args = ["--out", cfg.out] if cfg.out else []
        if cfg.dry_run:
            print(f"toolssm reproduce {exp.name}: {exp.what}")
            print(f"would run: toolssm {' '.join([exp.command, *args])}")
            return 0
        return fn(tyro.cli(cls, args=args))
    runs = plan(exp, cfg.scale, rows=cfg.rows, seeds=cfg.seeds, lengths=cfg.lengths, n_problems=cfg.n_problems,
                overrides=parse_overrides(cfg.set), device=cfg.device)  # fmt: skip
    for r in runs:  # fail fast: every task, model and size must exist before hours of work
        r.train_config(Path("unused")).validate()
        for s in r.lengths:
            get_task(r.train["task"]).spec_size(s)
    out = Path(cfg.out or f"runs/reproduce/{exp.name}-{cfg.scale}")
    print(f"toolssm reproduce {exp.name} --scale {cfg.scale}: {exp.what}")
    whole = not (cfg.rows or cfg.seeds or cfg.lengths or cfg.n_problems or cfg.set)  # the measured plan
    note = f"; the whole experiment, {exp.cpu_note}" if cfg.scale == "cpu" and exp.cpu_note and whole else ""
    print(f"{len(runs)} run{'s' * (len(runs) != 1)} into {out}{note}")
    if cfg.dry_run:
        for r in runs:
            print(f"  {'done' if record_path(out, r).is_file() else 'todo'}  {r.run_id}")
        return 0
    t0 = time.perf_counter()
    sweep(runs, out, jobs=cfg.jobs, log=lambda s: print(s, flush=True))
    text, files = report(out)
    print()
    print(text)
    print(f"wrote {', '.join(str(f) for f in files)}")
    print(f"reproduce {exp.name} finished in {time.perf_counter() - t0:.0f}s")
    return 0
