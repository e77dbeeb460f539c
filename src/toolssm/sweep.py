"""Sweeps: a list of runs (train, then evaluate), one JSONL record per finished run, resumable at any moment.

A `Run` is everything that decides a result: the training config (task, model, hyperparameters, seed),
the evaluation sizes and problem count, and its place in a figure (experiment, panel, row). Its id is a
readable label plus a hash of all that, so the same run always lands in the same folder.

Layout of a sweep folder::

    runs/<run id>/            the run's checkpoint and training log (train.py; resumed after a stop)
    records/<run id>.jsonl    the run's record, one JSON line: written when, and only when, the run is done
    results.jsonl             every record, one per line (rebuilt from records/ after each run)
    sweep.json                the planned runs (so a report can say how many are still missing)

**A run is done iff its record exists.** The record is written to a temporary file, flushed, fsynced and
renamed into place (an atomic step on POSIX), so a SIGKILL at any moment leaves either no record (the run
is redone: its training resumes from its last checkpoint, its evaluation starts over) or a whole one (the
run is skipped). No finished run is lost, and none is run twice.

Runs go ``jobs`` at a time, each in its own spawned process with one torch thread (``jobs=1``: in this
process). The longest runs (by the ``cost`` hint) start first.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import platform
import re
import time
import types
import typing
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import torch

from toolssm import __version__
from toolssm.models import ModelConfig
from toolssm.provenance import git_commit
from toolssm.runtime import freed_memory_kept, keep_freed_memory
from toolssm.train import RUNTIME_FIELDS, TimeLimitReached, TrainConfig, resolve_device, train

#: TrainConfig fields that do not change the result (where it goes, how it reports); left out of run ids
NOT_RESULT = RUNTIME_FIELDS


@dataclass
class Run:
    """One training run and its evaluation."""

    experiment: str
    row: str
    """the curve or table row it belongs to (e.g. the model)"""
    train: dict[str, Any]
    """TrainConfig fields; ``model`` is a dict of ModelConfig fields"""
    lengths: tuple[str, ...]
    n_problems: int = 20
    panel: str = ""
    """the figure panel or table column group, if the experiment has several"""
    eval_batch_size: int = 32
    eval_seed: int = 1234
    stop_below: float | None = None
    """skip the larger sizes once answer accuracy is below this (cost cap for models that already failed)"""
    eval_time_limit: float | None = None
    """per size: no new evaluation batch starts after this many seconds (the record's n says how many ran); not
    the training's ``time_limit``"""
    cost: float = 1.0
    """a relative wall-time hint: longer runs start first"""
    scale: str = "cpu"

    @property
    def seed(self) -> int:
        return int(self.train.get("seed", 0))

    @property
    def run_id(self) -> str:
        key = {k: v for k, v in asdict(self).items() if k not in ("cost", "scale", "eval_time_limit")}
        key["train"] = {k: v for k, v in self.train.items() if k not in NOT_RESULT}
        digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=list).encode()).hexdigest()[:10]
        label = re.sub(r"[^A-Za-z0-9_.=-]+", "_", "-".join(x for x in (self.panel, self.row) if x))
        return f"{label}-s{self.seed}-{digest}"

    def train_config(self, out: Path) -> TrainConfig:
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in self.train.items() if k != "model"}
        cfg = TrainConfig(**kw, model=ModelConfig(**self.train.get("model", {})))
        cfg.out, cfg.resume, cfg.progress = str(out), True, False
        return cfg


# -- grids ------------------------------------------------------------------------------------------------


def set_dotted(d: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of ``d`` with ``key`` (``lr`` or ``model.d_model``) set to ``value``."""
    out = json.loads(json.dumps(d))
    node = out
    *path, last = key.split(".")
    for p in path:
        node = node.setdefault(p, {})
    node[last] = value
    return out


def expand_grid(base: dict[str, Any], grid: dict[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values (keys may be dotted), applied to ``base``; the last key
    varies fastest."""
    keys = list(grid)
    out = []
    for values in itertools.product(*(grid[k] for k in keys)):
        d = base
        for k, v in zip(keys, values):
            d = set_dotted(d, k, v)
        out.append(d)
    return out


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``key=value`` strings (values parsed as JSON when they can be: numbers, true, lists) into a dict."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"bad setting {item!r}: expected key=value, e.g. steps=100 or model.d_model=32")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    known, model_known = {f.name for f in fields(TrainConfig)}, {f.name for f in fields(ModelConfig)}
    model_hints = {f"model.{k}": v for k, v in typing.get_type_hints(ModelConfig).items()}
    hints = typing.get_type_hints(TrainConfig) | model_hints
    for key, value in out.items():
        top, _, sub = key.partition(".")
        if top not in known or (top == "model") != bool(sub) or (sub and sub not in model_known):
            raise ValueError(f"bad setting {key!r}: not a training config field (see toolssm train --help)")
        if typing.get_origin(hints[key]) is tuple and isinstance(value, str):
            out[key] = value = [value]  # mix=addition:0.5 is one entry, not a string of characters
        if not _fits(value, hints[key]):
            raise ValueError(f"bad setting {key}={value!r}: expected {_spell(hints[key])}")
    return out


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value can stand for a config field of type ``hint`` (an int for a float too)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is tuple:
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _spell(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_spell(a) for a in args)
    if origin is tuple:
        return f"a list of {_spell(args[0])}"
    names = {int: "an integer", float: "a number", bool: "true or false", str: "text", type(None): "null"}
    return names.get(hint, str(hint))


# -- records ----------------------------------------------------------------------------------------------


def record_path(root: Path, run: Run) -> Path:
    return Path(root) / "records" / f"{run.run_id}.jsonl"


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """Write, flush, fsync, rename: readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def load_records(root: str | Path, require: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Every finished run's record: from records/ (the source of truth), else from results.jsonl. ``require``:
    more fields (of `RECORD_FIELDS`) each record must have, e.g. the ones a report reads."""
    root = Path(root)
    files = sorted((root / "records").glob("*.jsonl"))
    if files:
        return [_record(_text(f), f, require) for f in files]
    agg = root / "results.jsonl"
    if agg.is_file():
        return [_record(line, f"{agg}, line {i}", require) for i, line in enumerate(_text(agg).splitlines(), 1)
                if line.strip()]  # fmt: skip
    raise ValueError(f"no records in {root} (expected {root / 'records'}/*.jsonl or {agg})")


def _text(path: Path) -> str:
    """A file's text, or a one-line error naming the file."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"bad record file {path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None


#: a record's fields and their kinds: the first four are required, the others checked where present (or required)
RECORD_FIELDS = {"run_id": str, "experiment": str, "row": str, "results": list, "task": str, "train_size": int,
                 "seed": int, "config": dict, "lengths": list, "n_problems": int, "wall_s": (int, float),
                 "skipped": list, "panel": str}  # fmt: skip


def _record(text: str, where: Any, require: Sequence[str] = ()) -> dict[str, Any]:
    """One record, or a one-line error naming where it came from."""
    from toolssm.evaluate import LengthResult

    try:
        rec = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"bad record in {where}: not JSON ({e})") from None
    missing = [k for k in ("run_id", "experiment", "row", "results") if not isinstance(rec, dict) or k not in rec]
    if missing:
        raise ValueError(f"bad record in {where}: not a sweep record (no {', '.join(missing)})")
    bad = [k for k, kind in RECORD_FIELDS.items() if (k in rec or k in require)
           and (not isinstance(rec.get(k), kind) or isinstance(rec.get(k), bool))]  # fmt: skip
    if bad:
        raise ValueError(f"bad record in {where}: missing or malformed {', '.join(bad)}")
    number = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool)  # noqa: E731
    for i, r in enumerate(rec["results"]):
        try:
            res = LengthResult(**r)
        except TypeError:
            res = None
        nums = () if res is None else (res.size, res.n, res.answer_acc, res.trajectory_acc, res.truncated,
                                       res.tokens_per_problem, res.seconds)  # fmt: skip
        if res is None or not isinstance(res.spec, str) or not all(map(number, nums)) or not (
            res.token_acc is None or number(res.token_acc)
        ):
            raise ValueError(f"bad record in {where}: results[{i}] is not a size's result")
    return rec


def aggregate(root: str | Path) -> Path:
    """Rebuild results.jsonl from records/ (atomically)."""
    root = Path(root)
    lines = [f.read_text().strip() for f in sorted((root / "records").glob("*.jsonl"))]
    path = root / "results.jsonl"
    write_atomic(path, "".join(line + "\n" for line in lines))
    return path


# -- one run ----------------------------------------------------------------------------------------------


def execute(
    run: Run, root: str | Path, commit: str = "", jobs: int = 1, *, folder: str | Path | None = None,
    progress: bool = False, resume: bool = True,
) -> dict[str, Any]:
    """Train (resuming from the run's checkpoint if there is one), evaluate, write the record; return it.
    ``folder``: the run's folder (default ``root/runs/<run id>``; `toolssm demo` trains in its --out);
    ``progress``: progress bars for training and decoding; ``resume`` False: train's refusal of a folder that holds
    a checkpoint (`toolssm demo --no-resume`)."""
    from toolssm.checkpoint import load_trained
    from toolssm.evaluate import evaluate

    root = Path(root)
    path = record_path(root, run)
    if path.is_file():
        return json.loads(path.read_text())
    t0, started = time.perf_counter(), time.time()
    cfg = run.train_config(Path(folder) if folder is not None else root / "runs" / run.run_id)
    cfg.progress, cfg.resume = progress, resume
    ckpt = train(cfg)
    t_train = time.perf_counter() - t0
    device = resolve_device(cfg.device)
    loaded, task = load_trained(ckpt, device)
    results = evaluate(
        loaded.model, task, loaded.vocab, run.lengths, n_problems=run.n_problems, seed=run.eval_seed,
        batch_size=run.eval_batch_size, device=device, progress=progress, stop_below=run.stop_below,
        time_limit=run.eval_time_limit,
    )  # fmt: skip
    done = {r.spec for r in results}
    record = {
        "run_id": run.run_id, "experiment": run.experiment, "panel": run.panel, "row": run.row,
        "scale": run.scale, "task": cfg.task, "arch": cfg.model.arch, "train_size": cfg.train_size,
        "seed": cfg.seed, "config": run.train, "lengths": list(run.lengths), "n_problems": run.n_problems,
        "eval_seed": run.eval_seed, "stop_below": run.stop_below, "eval_time_limit": run.eval_time_limit,
        "params": _n_params(loaded.model),
        "results": [asdict(r) for r in results], "skipped": [s for s in run.lengths if s not in done],
        "train_s": round(t_train, 2), "eval_s": round(time.perf_counter() - t0 - t_train, 2),
        "wall_s": round(time.perf_counter() - t0, 2), "commit": commit or git_commit(),
        "toolssm": __version__, "torch": torch.__version__, "python": platform.python_version(), "host": platform.node(), "threads": torch.get_num_threads(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "started_at": round(started, 3),
        "ended_at": round(time.time(), 3), "jobs": jobs,
        "malloc": "kept" if freed_memory_kept() else "system",  # toolssm.runtime: it changes the wall times
    }  # fmt: skip
    write_atomic(path, json.dumps(record) + "\n")
    return record


def _n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _submit(todo: Sequence[Run], root: Path, commit: str, jobs: int, launcher: Launcher, finished) -> None:
    """Submit the runs through submitit, at most ``jobs`` in flight (a window, so a local executor does not start
    them all at once), and report each as it ends. On Ctrl-C the jobs in flight are cancelled: a cancelled run in
    training has saved its last checkpoint and resumes from it on the next submission."""
    executor = _submitit_executor(root, launcher)
    queue, flying = list(todo), {}
    try:
        while queue or flying:
            while queue and len(flying) < jobs:
                run = queue.pop(0)
                flying[executor.submit(_execute_job, run, root, commit, jobs, freed_memory_kept())] = run
            done = [j for j in flying if j.done()]
            if not done:
                time.sleep(0.5)
                continue
            for job in done:
                run = flying.pop(job)
                try:
                    rec = job.result()
                except Exception as e:  # noqa: BLE001 - submitit's FailedJobError/UncompletedJobError
                    finished(run, None, RuntimeError(str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)))
                    continue
                if "stopped" in rec:
                    finished(run, None, TimeLimitReached(rec["stopped"]))
                else:
                    finished(run, rec, None)
    except KeyboardInterrupt:
        for job in flying:
            with contextlib.suppress(Exception):
                job.cancel(check=False)
        raise KeyboardInterrupt("the submitted runs were cancelled; rerun the same command to continue them") from None


def _execute_in_worker(*args) -> dict[str, Any]:
    """`execute` in a pool worker. Interrupted (SIGINT, or SIGTERM from the parent), training has saved a
    checkpoint at its last step: the worker then leaves at once rather than wait for work that will not come."""
    try:
        return execute(*args)
    except KeyboardInterrupt:
        os._exit(130)


@dataclass
class Launcher:
    """Where a sweep's runs execute. ``local``: this machine (``jobs`` at a time, in this process or a process
    pool); ``submitit``: jobs through submitit (pip install -e ".[cluster]"): SLURM where ``srun`` is found,
    else its local executor, one job per run. The job is `execute` itself, so a cluster run writes the very
    record a local one would, and a rerun submits exactly the runs that have no record yet."""

    name: Literal["local", "submitit"] = "local"
    cluster: str = ""
    """submitit's executor: "" (SLURM when available, else local), slurm, local or debug"""
    partition: str = ""
    """the SLURM partition"""
    timeout_min: int = 240
    """each job's time limit on the cluster, minutes (a run cut off there resumes from its checkpoint on rerun)"""
    cpus_per_task: int = 1
    gpus_per_node: int = 0


def _submitit_executor(root: Path, launcher: Launcher):
    try:
        import submitit
    except ImportError:
        raise ValueError('--launcher submitit needs the submitit package: pip install -e ".[cluster]"') from None
    executor = submitit.AutoExecutor(folder=str(root / "submitit" / "%j"), cluster=launcher.cluster or None)
    params: dict[str, Any] = {"timeout_min": launcher.timeout_min, "cpus_per_task": launcher.cpus_per_task,
                              "name": f"toolssm-{root.name}"}  # fmt: skip
    if launcher.gpus_per_node:
        params["gpus_per_node"] = launcher.gpus_per_node
    if launcher.partition:
        params["slurm_partition"] = launcher.partition
    executor.update_parameters(**params)
    return executor


def _execute_job(run: Run, root: Path, commit: str, jobs: int, keep_heap: bool) -> dict[str, Any]:
    """`execute` as a submitit job: the process setup of a pool worker, and a time-limit stop returned as
    ``{"stopped": why}`` (an exception's type does not survive the trip back)."""
    _setup_process(keep_heap)
    try:
        return execute(run, root, commit, jobs)
    except TimeLimitReached as e:
        return {"stopped": str(e)}


def _setup_process(keep_heap: bool = False) -> None:
    """A run's process setup: one torch thread; in a spawned worker, the parent's allocator setting too."""
    torch.set_num_threads(1)
    if keep_heap:
        keep_freed_memory()


def sweep(
    runs: Sequence[Run], root: str | Path, *, jobs: int = 1, log=print, launcher: Launcher | None = None
) -> list[dict[str, Any]]:
    """Run every run that has no record yet, ``jobs`` at a time (here, or through ``launcher``); return all
    the runs' records, in order."""
    launcher = launcher or Launcher()
    root = Path(root)
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise ValueError("the sweep lists the same run twice")
    if jobs < 1:
        raise ValueError(f"bad jobs={jobs}: must be positive")
    root.mkdir(parents=True, exist_ok=True)
    write_atomic(root / "sweep.json", json.dumps([{**asdict(r), "run_id": r.run_id} for r in runs], indent=1))
    todo = sorted((r for r in runs if not record_path(root, r).is_file()), key=lambda r: -r.cost)
    log(f"{len(runs) - len(todo)} of {len(runs)} runs already done; {len(todo)} to run, {jobs} at a time")
    commit = git_commit()
    failed: list[str] = []
    stopped: list[str] = []
    t0 = time.perf_counter()

    def finished(run: Run, rec: dict | None, err: BaseException | None) -> None:
        k = len(runs) - sum(not record_path(root, r).is_file() for r in runs)
        if isinstance(err, TimeLimitReached):
            stopped.append(run.run_id)
            log(f"  stopped {run.run_id}: {err}")
            return
        if err is not None:
            failed.append(f"{run.run_id}: {err}")
            log(f"  FAILED {run.run_id}: {type(err).__name__}: {err}")
            return
        aggregate(root)
        from toolssm.records import run_cell

        log(f"  [{k}/{len(runs)}] {run.run_id}: {run_cell(rec)}  (train {rec['train_s']:.0f}s, "
            f"eval {rec['eval_s']:.0f}s; {time.perf_counter() - t0:.0f}s into the sweep)")  # fmt: skip

    if launcher.name == "submitit":
        _submit(todo, root, commit, jobs, launcher, finished)
    elif jobs == 1:  # in this process, but with one torch thread as in a worker: results must not depend on jobs
        before = torch.get_num_threads()
        _setup_process()
        for run in todo:
            try:
                finished(run, execute(run, root, commit, jobs), None)
            except Exception as e:  # noqa: BLE001  (one failed run does not stop the sweep)
                finished(run, None, e)
        torch.set_num_threads(before)
    else:
        ctx = torch.multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_setup_process,
                                 initargs=(freed_memory_kept(),)) as pool:  # fmt: skip
            pending = {pool.submit(_execute_in_worker, run, root, commit, jobs): run for run in todo}
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        run = pending.pop(fut)
                        err = fut.exception()
                        finished(run, None if err else fut.result(), err)
            except KeyboardInterrupt:
                for fut in pending:
                    fut.cancel()
                # SIGTERM: a run in training finishes its step and saves a checkpoint there (train.py), then its
                # worker leaves; the pool, broken by that, joins the rest. (_processes: CPython's pid -> Process.)
                for proc in list((getattr(pool, "_processes", None) or {}).values()):
                    proc.terminate()
                raise KeyboardInterrupt("the runs in training saved a checkpoint at their last step; "
                                        "rerun the same command to continue") from None  # fmt: skip
    aggregate(root)
    if failed:
        raise ValueError(f"{len(failed)} run(s) failed: " + "; ".join(failed))
    if stopped:
        raise TimeLimitReached(f"{len(stopped)} run(s) stopped at their time limit with a checkpoint saved: "
                               f"rerun the same command to continue them")  # fmt: skip
    return [json.loads(record_path(root, r).read_text()) for r in runs]

