"""The ``toolssm`` command: train, eval, solve, demo. Every config field is a flag (tyro).

Bad input (an unknown task or model, a bad size, a missing or corrupt checkpoint, a malformed flag) ends
with one line, ``toolssm: error: ...``, and exit code 2. Set ``TOOLSSM_DEBUG=1`` for the traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import shlex
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import tyro

from toolssm.checkpoint import CheckpointError, check_task_format, load_checkpoint
from toolssm.evaluate import evaluate, format_comparison, format_table, plot_curves, save_results
from toolssm.report import ReportConfig, run_report
from toolssm.reproduce import ReproduceConfig, run_reproduce
from toolssm.runtime import keep_freed_memory
from toolssm.tasks import get_task
from toolssm.theory.cli import TheoryConfig, run_theory
from toolssm.train import TimeLimitReached, TrainConfig, check_out, resolve_device, train

DEFAULT_LENGTHS = ("5", "10", "100", "1000")


@dataclass
class EvalConfig:
    """Evaluate a checkpoint at a grid of problem sizes; write a table, results.json and a plot."""

    checkpoint: str = "runs/demo"
    """checkpoint folder, or the run folder holding it"""
    lengths: tuple[str, ...] = DEFAULT_LENGTHS
    """sizes to test; for addition N (two N-digit operands) or N1+N2. Any task: '<=N' (quote it in a shell)
    draws problems as training did, every size up to N mixed: in-distribution accuracy, left out of n→m"""
    n_problems: int = 20
    """problems per size"""
    batch_size: int = 32
    seed: int = 1234
    out: str | None = None
    """where to write results (default: <run>/eval)"""
    token_acc: bool = True
    """also measure teacher-forced token accuracy"""
    device: str = "auto"
    threads: int = 1
    """torch CPU threads for decoding: its per-token ops are tiny, so more threads only add overhead"""
    procs: int = 1
    """CPU processes to fan the batches out over (one thread each); results equal --procs 1 at the same batch size"""
    progress: bool = True


@dataclass
class SolveConfig:
    """Solve one problem with a trained model driving its tool; print the answer (and the trajectory)."""

    problem: tyro.conf.Positional[str] = ""
    """the problem, e.g. 123+4567 (or give --file)"""
    file: str | None = None
    """read the problem from this file (- for standard input): for problems too long for a command line"""
    engine: str = "auto"
    """decoder: auto (the compiled engine where it has kernels for the model and tool, else torch), compiled, torch"""
    checkpoint: str = "runs/demo"
    trace: bool = False
    """print the full trajectory, one role per line"""
    max_tokens: int | None = None
    """generation budget (default: the task's)"""
    device: str = "cpu"


@dataclass
class DemoConfig(TrainConfig):
    """Train on short problems (<= train_size), then test on far longer ones: the paper's headline."""

    out: str = "runs/demo"
    resume: bool = True
    """continue the run in ``out`` (a finished one is only evaluated again); a different config is refused"""
    seed: int = 1
    """seed 1 is the first of the 10-seed study (bench/seeds.py) whose model generalizes; 9 of seeds 0-9 do,
    seed 0 reaches 50% at 1,000 digits (docs/design.md, "seeds")"""
    threads: int = 1
    """torch CPU threads for training: 1 makes the run bit-identical to bench/seeds.py's for the same seed"""
    lengths: tuple[str, ...] = DEFAULT_LENGTHS
    """sizes to test after training ('<=N', quoted: problems drawn as in training, every size up to N)"""
    n_problems: int = 20
    eval_batch_size: int = 32
    eval_threads: int = 1
    """torch CPU threads for the evaluation's decoding (training uses ``threads``)"""


def _setup(threads: int) -> None:
    if threads:
        torch.set_num_threads(threads)


def _check_eval(lengths: tuple[str, ...], n_problems: int, batch_size: int, threads: int, *, flags: str) -> None:
    """The evaluation's flags, checked before any work (``flags``: how this command spells the batch flag)."""
    if not lengths:
        raise ValueError("no sizes to test: give --lengths SIZE [SIZE ...]")
    if n_problems < 1:
        raise ValueError(f"bad --n-problems {n_problems}: must be positive")
    if batch_size < 1:
        raise ValueError(f"bad {flags} {batch_size}: must be positive")
    if threads < 0:
        raise ValueError(f"bad threads={threads}: must be >= 0 (0: torch's default)")


def run_eval(cfg: EvalConfig) -> int:
    _check_eval(cfg.lengths, cfg.n_problems, cfg.batch_size, cfg.threads, flags="--batch-size")
    if cfg.procs < 1:
        raise ValueError(f"bad --procs {cfg.procs}: must be positive")
    if cfg.out:
        check_out(cfg.out)
    _setup(cfg.threads)
    device = resolve_device(cfg.device)
    loaded = load_checkpoint(cfg.checkpoint, device)
    task = get_task(loaded.task)
    check_task_format(loaded, task)
    for s in cfg.lengths:
        task.spec_size(s)
    train_size = int(loaded.config.get("train", {}).get("train_size", 0)) or task.spec_size(cfg.lengths[0])
    out = Path(cfg.out) if cfg.out else loaded.path.parent / "eval"
    print(f"evaluating {loaded.arch} on {loaded.task} (trained to size {train_size}, step {loaded.step})")
    results = evaluate(
        loaded.model, task, loaded.vocab, cfg.lengths, n_problems=cfg.n_problems, seed=cfg.seed,
        batch_size=cfg.batch_size, device=device, with_token_acc=cfg.token_acc, progress=cfg.progress,
        procs=cfg.procs,
    )  # fmt: skip
    _report(results, out, train_size=train_size, label=loaded.arch, task=loaded.task, checkpoint=str(loaded.path))
    return 0


def _report(results, out: Path, *, train_size: int, label: str, task: str, checkpoint: str) -> None:
    table = format_table(results, train_size=train_size, label=label)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.txt").write_text(table + "\n")
    save_results(results, out / "results.json", task=task, label=label, train_size=train_size, checkpoint=checkpoint)
    png = plot_curves({label: results}, out / "accuracy.png", train_size=train_size,
                      title=f"{label} on {task}: trained on size ≤ {train_size}")  # fmt: skip
    print()
    print(table)
    print(f"\nwrote {out / 'table.txt'}, {out / 'results.json'} and {png}")


def _problem_text(cfg: SolveConfig) -> str:
    """The problem from the positional argument or from --file (a path, or - for standard input)."""
    if (cfg.file is None) == (not cfg.problem):
        raise ValueError("give the problem, e.g. 123+4567, as an argument or with --file PATH (- for standard input),"
                         " not both")  # fmt: skip
    if cfg.file is None:
        return cfg.problem
    if cfg.file == "-":
        return sys.stdin.read()
    try:
        return Path(cfg.file).read_text()
    except OSError as e:
        raise ValueError(f"cannot read --file {cfg.file}: {e.strerror}") from None


def run_solve(cfg: SolveConfig) -> int:
    _setup(1)  # decoding one token at a time: more threads only add overhead
    from toolssm.rollout import ENGINES

    if cfg.engine not in ENGINES:
        raise ValueError(f"unknown engine {cfg.engine!r} (choose from: {', '.join(ENGINES)})")
    text = _problem_text(cfg)
    device = resolve_device(cfg.device)
    loaded = load_checkpoint(cfg.checkpoint, device)
    task = get_task(loaded.task)
    check_task_format(loaded, task)
    problem = task.parse(text)
    from toolssm.rollout import rollout

    budget = cfg.max_tokens if cfg.max_tokens is not None else task.token_budget(problem)
    if budget < 1:
        raise ValueError(f"bad max_tokens={budget}: must be positive")
    ep = task.episode(problem, record=cfg.trace, max_tokens=budget)
    t0 = time.perf_counter()
    (res,) = rollout(loaded.model, loaded.vocab, [ep], device=device, engine=cfg.engine)
    dt = time.perf_counter() - t0
    verdict = task.verify(problem, res.output)
    if cfg.trace and res.trajectory is not None:
        print(res.trajectory.render())
        print()
    status = "terminated" if res.terminated else "truncated (token budget ran out)"
    print(f"answer: {verdict.got or '(empty)'}")
    print(
        f"verdict: {'correct' if verdict.correct else 'WRONG, expected ' + verdict.expected}"
        f"  [{status}; {res.n_generated:,} tokens generated, {res.n_tokens:,} in all, {dt:.1f}s,"
        f" {res.n_tokens / max(dt, 1e-9):,.0f} tokens/s]"
    )
    return 0


def run_train(cfg: TrainConfig) -> int:
    ckpt = train(cfg)
    print(f"checkpoint: {ckpt}")
    return 0


def _example(task, spec: str) -> str:
    """A problem to suggest to `toolssm solve`, shell-quoted: addition's carry chain, else a seeded draw."""
    if task.name == "addition":
        return "99999999999999999999+1"
    text = task.format(task.draw(random.Random(0), spec)).replace("\n", "; ")
    return shlex.quote(text)


def run_demo(cfg: DemoConfig) -> int:
    cfg.validate()
    _check_eval(cfg.lengths, cfg.n_problems, cfg.eval_batch_size, cfg.eval_threads, flags="--eval-batch-size")
    task = get_task(cfg.task)
    for s in cfg.lengths:
        task.spec_size(s)
    train_cfg = TrainConfig(**{f.name: getattr(cfg, f.name) for f in fields(TrainConfig)})
    t0 = time.perf_counter()
    print(f"toolssm demo: train {cfg.model.arch} on {cfg.task} of size <= {cfg.train_size}, "
          f"then test at sizes {', '.join(cfg.lengths)}")  # fmt: skip
    ckpt = train(train_cfg)
    t_train = time.perf_counter() - t0
    print(f"trained in {t_train:.0f}s; checkpoint: {ckpt}")
    _setup(cfg.eval_threads)
    loaded = load_checkpoint(ckpt, resolve_device(cfg.device))
    results = evaluate(
        loaded.model, task, loaded.vocab, cfg.lengths, n_problems=cfg.n_problems, seed=1234,
        batch_size=cfg.eval_batch_size, device=resolve_device(cfg.device), progress=cfg.progress,
    )  # fmt: skip
    _report(results, Path(cfg.out) / "eval", train_size=cfg.train_size, label=cfg.model.arch, task=cfg.task,
            checkpoint=str(ckpt))  # fmt: skip
    print(f"demo finished in {time.perf_counter() - t0:.0f}s (training {t_train:.0f}s). "
          f"Try: toolssm solve --checkpoint {cfg.out} {_example(task, cfg.lengths[0])} --trace")  # fmt: skip
    return 0


@dataclass
class CompareConfig:
    """Train several architectures with the demo recipe and compare their length generalization (Figure 2)."""

    models: tuple[str, ...] = ("lstm", "gru", "mamba", "pythia", "mistral")
    """architectures (cpu presets), each trained like `toolssm demo --model NAME`"""
    out: str = "runs/compare"
    """one run folder per model under it; finished models are skipped on a rerun"""
    jobs: int = 2
    """models trained at once, one torch thread each"""
    task: str = "addition"
    train_size: int = 5
    steps: int = 2500
    seed: int = 0
    lengths: tuple[str, ...] = DEFAULT_LENGTHS
    n_problems: int = 20
    extra: tuple[str, ...] = ()
    """more `toolssm demo` flags for every model, e.g. --extra=--lr --extra=1e-3"""


def run_compare(cfg: CompareConfig) -> int:
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    from toolssm.evaluate import LengthResult
    from toolssm.models import model_names

    if not cfg.models:
        raise ValueError("no models to compare: give --models NAME [NAME ...]")
    for m in cfg.models:
        if m not in model_names():
            raise ValueError(f"unknown model {m!r} (choose from: {', '.join(model_names())})")
        if cfg.models.count(m) > 1:
            raise ValueError(f"model {m!r} is listed twice in --models: each model has one run folder")
    if cfg.jobs < 1:
        raise ValueError(f"bad jobs={cfg.jobs}: must be positive")
    check_out(cfg.out)
    _check_eval(cfg.lengths, cfg.n_problems, 1, 0, flags="--batch-size")
    DemoConfig(task=cfg.task, train_size=cfg.train_size, steps=cfg.steps).validate()  # each model's demo, checked
    task = get_task(cfg.task)
    for s in cfg.lengths:
        task.spec_size(s)
    out = Path(cfg.out)

    def demo_args(model: str) -> list[str]:
        return ["demo", "--model", model, "--out", str(out / model), "--threads", "1", "--task", cfg.task,
                "--train-size", str(cfg.train_size), "--steps", str(cfg.steps), "--seed", str(cfg.seed),
                "--n-problems", str(cfg.n_problems), "--no-progress", "--lengths", *cfg.lengths, *cfg.extra]  # fmt: skip

    def done(model: str) -> bool:
        """True when the model's results are this compare's; False when it has none; refused when another's."""
        run = out / model
        if not (run / "eval" / "results.json").is_file():
            return False
        stamp = run / "compare.json"
        if stamp.is_file() and json.loads(stamp.read_text()) == demo_args(model):
            return True
        raise ValueError(f"{run} holds {model} results from other settings than this compare's "
                         f"(see {stamp.name if stamp.is_file() else 'its demo.log'}): choose another --out")  # fmt: skip

    finished = {m: done(m) for m in cfg.models}  # every refusal before any training

    def one(model: str) -> tuple[str, float]:
        run = out / model
        if finished[model]:
            return model, 0.0
        argv = [sys.executable, "-m", "toolssm.cli", *demo_args(model)]
        run.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with (run / "demo.log").open("w") as log:
            proc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if proc.returncode != 0:
            raise ValueError(f"{model} failed (exit {proc.returncode}); see {run / 'demo.log'}")
        (run / "compare.json").write_text(json.dumps(demo_args(model)))
        print(f"  {model}: done in {time.perf_counter() - t0:.0f}s", flush=True)
        return model, time.perf_counter() - t0

    print(f"comparing {', '.join(cfg.models)} on {cfg.task} (train <= {cfg.train_size}), {cfg.jobs} at a time")
    with ThreadPoolExecutor(cfg.jobs) as pool:
        list(pool.map(one, cfg.models))
    curves = {}
    for m in cfg.models:
        data = json.loads((out / m / "eval" / "results.json").read_text())
        curves[m] = [LengthResult(**r) for r in data["results"]]
    table = format_comparison(curves, train_size=cfg.train_size)
    (out / "table.md").write_text(table + "\n")
    png = plot_curves(curves, out / "accuracy.png", train_size=cfg.train_size,
                      title=f"{cfg.task}: trained on size ≤ {cfg.train_size}")  # fmt: skip
    print()
    print(table)
    print(f"\nwrote {out / 'table.md'} and {png}")
    return 0


COMMANDS = {
    "demo": (DemoConfig, run_demo),
    "compare": (CompareConfig, run_compare),
    "train": (TrainConfig, run_train),
    "eval": (EvalConfig, run_eval),
    "solve": (SolveConfig, run_solve),
    "reproduce": (ReproduceConfig, run_reproduce),
    "report": (ReportConfig, run_report),
    "theory": (TheoryConfig, run_theory),
}


def _one_line(captured: str) -> str:
    """Condense tyro's boxed error message to its first sentence."""
    lines = [re.sub(r"^[\s│╭╰─┃|]+|[\s│╮╯─┃|]+$", "", ln) for ln in captured.splitlines()]
    lines = [ln for ln in lines if ln and not set(ln) <= set("─-━ ")]
    if not lines:
        return "bad command line (see --help)"
    body = [ln for ln in lines[1:] if not ln.lower().startswith(("usage", "for full helptext", "argument helptext"))]
    msg = body[0] if body else lines[0]
    if msg.endswith(":") and len(body) > 1:  # "Missing from toolssm solve:" names what below it
        msg = f"{msg} {' '.join(body[1:3])}"
    return f"{msg} (see --help)"


def parse(argv: list[str]):
    if not argv or argv[0] not in COMMANDS:
        if argv and argv[0] in ("-h", "--help"):
            print("usage: toolssm {demo,compare,train,eval,solve,reproduce,report,theory} [--help] [FLAGS]\n\n"
                  "  demo     train on short problems, then test on long ones (the paper's headline)\n"
                  "  compare  the demo for several architectures, one table and plot (Figure 2)\n"
                  "  train    train a model on a task's expert trajectories\n"
                  "  eval     evaluate a checkpoint over a grid of problem sizes\n"
                  "  solve    solve one problem with a trained model and its tool\n"
                  "  reproduce  one table or figure of the paper: a resumable sweep, then its report\n"
                  "  report     rebuild paper-style tables and plots from a sweep's records\n"
                  "  theory     the paper's theorems, run: Turing-machine table learner, the state-count bound")  # fmt: skip
            raise SystemExit(0)
        what = f"unknown command {argv[0]!r}" if argv else "missing command"
        raise ValueError(f"{what} (choose from: {', '.join(COMMANDS)})")
    cls, fn = COMMANDS[argv[0]]
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            cfg = tyro.cli(cls, args=argv[1:], prog=f"toolssm {argv[0]}")
    except SystemExit as e:
        if e.code in (0, None):  # --help
            sys.stdout.write(buf.getvalue())
            raise
        raise ValueError(_one_line(buf.getvalue())) from None
    return cfg, fn


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    keep_freed_memory()  # no page-fault storm from large activations freed every step (toolssm.runtime)
    try:
        cfg, fn = parse(argv)
        return fn(cfg)
    except (ValueError, CheckpointError) as e:
        if os.environ.get("TOOLSSM_DEBUG"):
            raise
        print(f"toolssm: error: {e}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:  # data or tensors too large to fit; whatever was saved stays saved
        oom = isinstance(e, MemoryError) or any(m in str(e) for m in ("can't allocate memory", "out of memory"))
        if not oom or os.environ.get("TOOLSSM_DEBUG"):
            raise
        print("toolssm: error: out of memory: a size, batch or model this large does not fit on this machine",
              file=sys.stderr)  # fmt: skip
        return 2
    except TimeLimitReached as e:  # a checkpoint is saved; the exit status of coreutils' timeout
        print(f"toolssm: {e}", file=sys.stderr)
        return 124
    except KeyboardInterrupt as e:  # from training: its checkpoint is saved and the message says where
        print("toolssm: interrupted" + (f": {e}" if str(e) else ""), file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

