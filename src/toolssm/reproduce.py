"""One command per item of the paper: ``toolssm reproduce EXPERIMENT --scale cpu|paper`` = sweep + report.

`toolssm.experiments.EXPERIMENTS` names each table and figure. An experiment is a list of rows (a model, an
ablation, a grid point; optionally grouped into panels), each a task at a training size with training overrides,
and the sizes to test. A scale turns the rows into runs:

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from toolssm.choices import choice, device_names
from toolssm.experiments import DATA_COUNT, EXPERIMENTS, PAPER_STEPS, Experiment
from toolssm.models import ModelConfig, has_fixed_state
from toolssm.report import report
from toolssm.sweep import Launcher, Run, expand_grid, parse_overrides, record_path, set_dotted, sweep
from toolssm.tasks import get_task
from toolssm.train import TrainConfig, check_device, check_out

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
    device: Annotated[str, choice(device_names)] = "auto"
    """auto (cuda when present), cpu or cuda, for every run"""
    dry_run: bool = False
    """list the runs (done or to do) and stop"""
    launcher: Literal["local", "submitit"] = "local"
    """local: here, --jobs at a time; submitit: one job per run through submitit (SLURM, or its local executor)"""
    cluster: str = ""
    """with --launcher submitit: slurm, local or debug (default: SLURM when srun is found, else local)"""
    partition: str = ""
    """with --launcher submitit: the SLURM partition"""
    timeout_min: int = 240
    """with --launcher submitit: each job's time limit, minutes (a cut-off run resumes on rerun)"""


def describe() -> str:
    lines = ["experiments (toolssm reproduce NAME --scale cpu|paper):"]
    for e in EXPERIMENTS.values():
        lines.append(f"  {e.name:<24} {e.what}")
    return "\n".join(lines)


Commands = Mapping[str, tuple[type, Callable[[Any], int]]]
"""the CLI's commands by name: (config class, handler)"""


def run_reproduce(cfg: ReproduceConfig, commands: Commands | None = None) -> int:
    """Run the experiment's sweep, then its report. ``commands``: for an experiment that is a command rather
    than a sweep (`toolssm.cli` passes its own)."""
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
    if cfg.launcher == "local" and (cfg.cluster or cfg.partition):
        raise ValueError("--cluster and --partition go with --launcher submitit")
    if cfg.timeout_min < 1:
        raise ValueError(f"bad --timeout-min {cfg.timeout_min}: must be positive")
    if cfg.out:
        check_out(cfg.out)
    if exp.requires and importlib.util.find_spec(exp.requires) is None:
        raise ValueError(f"{exp.name} is not available yet: it needs {exp.requires}, which is not in this build")
    if exp.command:
        if exp.command not in (commands or {}):
            raise ValueError(f"{exp.name} is not available yet: `toolssm {exp.command}` is not in this build")
        cls, fn = commands[exp.command]
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
    for task, data, size in sorted({(r.train["task"], r.train["data"], r.train["train_size"]) for r in runs
                                    if r.train.get("data") and not Path(r.train["data"]).exists()}):  # fmt: skip
        print(f"collecting {DATA_COUNT} {task} trajectories of size <= {size} into {data} (toolssm collect)")
        get_task(task).make_data(data, count=DATA_COUNT, max_size=size)
    launcher = Launcher(cfg.launcher, cluster=cfg.cluster, partition=cfg.partition, timeout_min=cfg.timeout_min)
    sweep(runs, out, jobs=cfg.jobs, log=lambda s: print(s, flush=True), launcher=launcher)
    text, files = report(out)
    print()
    print(text)
    print(f"wrote {', '.join(str(f) for f in files)}")
    print(f"reproduce {exp.name} finished in {time.perf_counter() - t0:.0f}s")
    return 0
