"""toolssm: state-space and recurrent models that use tools, trained short and tested long.

Every command is one of tyro's subcommands and every config field a flag, so ``--help``, usage and shell completion
(``toolssm --tyro-write-completion bash FILE``) all come from the dataclasses below.

Bad input (an unknown task or model, a bad size, a missing or corrupt checkpoint, a malformed flag) ends
with one line, ``toolssm: error: ...``, and exit code 2. Set ``TOOLSSM_DEBUG=1`` for the traceback.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import json
import os
import random
import re
import shlex
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Annotated, Literal, Union

import torch
import tyro

from toolssm.checkpoint import CheckpointError, check_finite, load_trained
from toolssm.cli_theory import TheoryConfig, run_theory
from toolssm.collect import CollectConfig, run_collect
from toolssm.evaluate import evaluate, save_results
from toolssm.experiments import ADDITION_CPU
from toolssm.limits import check_eval_memory
from toolssm.plots import format_comparison, format_table, plot_curves
from toolssm.report import ReportConfig, run_report
from toolssm.records import curve as record_curve
from toolssm.records import results as record_results
from toolssm.reproduce import CPU_COST, ReproduceConfig, run_reproduce
from toolssm.runtime import keep_freed_memory
from toolssm.sweep import Run, execute, parse_overrides, record_path, set_dotted, sweep
from toolssm.choices import choice, device_names
from toolssm.models import model_names
from toolssm.tasks import get_task, task_names
from toolssm.train import TimeLimitReached, TrainConfig, check_out, load_config_file, resolve_device, train

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
    """problems decoded together"""
    seed: int = 1234
    """seed of the problems drawn at each size (the same seed gives the same problems)"""
    out: str | None = None
    """where to write results (default: <run>/eval)"""
    token_acc: bool = True
    """also measure teacher-forced token accuracy"""
    device: Annotated[str, choice(device_names)] = "auto"
    """auto (cuda when present), cpu or cuda"""
    threads: int = 1
    """torch CPU threads for decoding: its per-token ops are tiny, so more threads only add overhead"""
    procs: int = 1
    """CPU processes to fan the batches out over (one thread each); results equal --procs 1 at the same batch size"""
    progress: bool = True
    """show progress bars while decoding"""


@dataclass
class SolveConfig:
    """Solve one problem with a trained model driving its tool; print the answer (and the trajectory)."""

    problem: tyro.conf.Positional[str] = ""
    """the problem, e.g. 123+4567 (or give --file)"""
    file: str | None = None
    """read the problem from this file (- for standard input): for problems too long for a command line"""
    engine: Literal["auto", "compiled", "torch"] = "auto"
    """decoder: auto (the compiled engine where it has kernels for the model and tool, else torch), compiled, torch"""
    checkpoint: str = "runs/demo"
    """checkpoint folder, or the run folder holding it"""
    trace: bool = False
    """print the full trajectory, one role per line"""
    max_tokens: int | None = None
    """generation budget (default: the task's)"""
    device: Annotated[str, choice(device_names)] = "cpu"
    """cpu or cuda (decoding one problem: the CPU is usually faster)"""


@dataclass
class DemoConfig(TrainConfig):
    """Train on short problems (<= train_size), then test on far longer ones: the paper's headline."""

    out: str = "runs/demo"
    resume: bool = True
    """continue the run in ``out`` (a finished one is only evaluated again); a different config is refused"""
    seed: int = 0
    """training seed (the addition recipe is exact at 1,000 digits on each of seeds 0-9: docs/design.md, "Seeds")"""
    weight_decay: float = ADDITION_CPU["weight_decay"]
    """AdamW weight decay: the addition recipe's (without it, seed 0 reaches 50% at 1,000 digits)"""
    threads: int = 1
    """torch CPU threads for training: 1 makes the run bit-identical to a sweep's run of the same seed"""
    lengths: tuple[str, ...] = DEFAULT_LENGTHS
    """sizes to test after training ('<=N', quoted: problems drawn as in training, every size up to N)"""
    n_problems: int = 20
    """test problems per size"""
    eval_batch_size: int = 32
    """test problems decoded together"""
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
    loaded, task = load_trained(cfg.checkpoint, device)
    check_finite(loaded)
    for s in cfg.lengths:
        task.spec_size(s)
    check_eval_memory(task, cfg.lengths, n_problems=cfg.n_problems, batch_size=cfg.batch_size, procs=cfg.procs)
    train_size = int(loaded.config.get("train", {}).get("train_size", 0)) or task.spec_size(cfg.lengths[0])
    out = Path(cfg.out) if cfg.out else loaded.path.parent / "eval"
    check_out(str(out))  # the default, <run>/eval, too: before the evaluation, not after it
    print(f"evaluating {loaded.arch} on {loaded.task} (trained to size {train_size}, step {loaded.step})")
    results = evaluate(
        loaded.model, task, loaded.vocab, cfg.lengths, n_problems=cfg.n_problems, seed=cfg.seed,
        batch_size=cfg.batch_size, device=device, with_token_acc=cfg.token_acc, progress=cfg.progress,
        procs=cfg.procs,
    )  # fmt: skip
    _report(results, out, train_size=train_size, label=loaded.arch, task=loaded.task, checkpoint=str(loaded.path),
            seeds={"eval_seed": cfg.seed, "train_seed": loaded.config.get("train", {}).get("seed")})  # fmt: skip
    return 0


def _report(results, out: Path, *, train_size: int, label: str, task: str, checkpoint: str, seeds=None) -> None:
    table = format_table(results, train_size=train_size, label=label)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.txt").write_text(table + "\n")
    save_results(results, out / "results.json", task=task, label=label, train_size=train_size, checkpoint=checkpoint,
                 seeds=seeds)  # fmt: skip
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
    loaded, task = load_trained(cfg.checkpoint, device)
    check_finite(loaded)
    problem = task.parse(text)
    from toolssm.rollout import rollout

    budget = cfg.max_tokens if cfg.max_tokens is not None else task.token_budget(problem)
    if budget < 1:
        raise ValueError(f"bad max_tokens={budget}: must be positive")
    t0 = time.perf_counter()
    with task.episode(problem, record=cfg.trace, max_tokens=budget) as ep:
        (res,) = rollout(loaded.model, loaded.vocab, [ep], device=device, engine=cfg.engine)
        dt = time.perf_counter() - t0
        verdict = task.verify(problem, ep)
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


@dataclass
class AnalyzeConfig:
    """Predict length generalization before training: the expert's policy window k, and whether the k-token
    contexts at each test size were seen in training (the k-gram learner's row, without training it)."""

    task: Annotated[str, choice(task_names)] = "addition"
    """task name"""
    train_size: int = 5
    """largest problem size in the training sample"""
    sizes: tuple[str, ...] = ("5", "10", "100", "1000")
    """test sizes, as eval's --lengths"""
    steps: int = 100
    """the training sample is the problems `train --steps S --batch-size B --seed SEED` draws"""
    batch_size: int = 32
    """train's --batch-size: the training sample is drawn as training draws it"""
    seed: int = 0
    """train's --seed"""
    n_problems: int = 20
    """test problems per size: those `eval --n-problems N --seed EVAL_SEED` draws"""
    eval_seed: int = 1234
    """seed of the test problems (eval's --seed): the same problems as `toolssm eval`"""
    k: int = 0
    """the table's context length, as a k-gram learner's --model.window (0: the policy window)"""
    max_k: int = 64
    """the longest window the policy-window search tries"""
    exchangeable: str = ""
    """a regex for tokens the expert only copies (e.g. '\\(\\d+\\)', Hanoi's disks): read as one class, written as
    copies, so contexts count structure, not values (docs/analysis.md)"""
    progress: bool = True
    """show progress bars"""
    data: str = ""
    """analyse stored trajectories as the training sample, the batches `train --data FILE` draws from them (code
    fixing's collection, tokenized with the tokenizer.json beside it; or a `toolssm data` file); the test sizes
    are still drawn and run by the task's expert"""


def run_analyze(cfg: AnalyzeConfig) -> int:
    from toolssm.analysis import analyze, format_analysis
    from toolssm.data import load_stored
    from toolssm.evaluate import LengthResult
    from toolssm.plots import paper_cell

    task = get_task(cfg.task)
    task.spec_size(str(cfg.train_size))
    for name in ("steps", "batch_size", "n_problems", "max_k"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"bad --{name.replace('_', '-')} {getattr(cfg, name)}: must be positive")
    if not cfg.sizes:
        raise ValueError("no sizes to test: give --sizes SIZE [SIZE ...]")
    if not 0 <= cfg.k <= cfg.max_k:
        raise ValueError(f"bad --k {cfg.k}: 0 (the policy window) or up to --max-k {cfg.max_k}")
    for spec in cfg.sizes:  # before the stored data are read
        task.spec_size(spec)
    data = load_stored(task, cfg.data) if cfg.data else None  # as train --data loads it (and its tokenizer)
    a = analyze(
        task, cfg.train_size, cfg.sizes, steps=cfg.steps, batch_size=cfg.batch_size, seed=cfg.seed,
        n_problems=cfg.n_problems, eval_seed=cfg.eval_seed, k=cfg.k, max_k=cfg.max_k, exchangeable=cfg.exchangeable,
        progress=cfg.progress, data=data,
    )  # fmt: skip
    rows = [LengthResult(r.spec, r.size, r.n, r.exact, r.exact, None, 0, r.tokens_per_problem, r.seconds)
            for r in a.sizes]  # fmt: skip
    print(format_analysis(a, paper_cell(cfg.train_size, rows)))
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


def demo_run(cfg: DemoConfig) -> Run:
    """The demo as a one-run plan: its training config (every field but where it goes and how it reports)
    and its evaluation. Its record goes to ``OUT/records/``, written when and only when the run is done."""
    train_fields = {f.name: getattr(cfg, f.name) for f in fields(TrainConfig) if f.name not in ("out", "resume", "progress")}
    train_fields["model"] = asdict(cfg.model)
    train_fields = json.loads(json.dumps(train_fields))  # tuples as lists, as a record holds them
    return Run(experiment="demo", row=cfg.model.arch, train=train_fields, lengths=tuple(cfg.lengths),
               n_problems=cfg.n_problems, eval_batch_size=cfg.eval_batch_size)  # fmt: skip


def run_demo(cfg: DemoConfig) -> int:
    cfg.validate()
    _check_eval(cfg.lengths, cfg.n_problems, cfg.eval_batch_size, cfg.eval_threads, flags="--eval-batch-size")
    task = get_task(cfg.task)
    for s in cfg.lengths:
        task.spec_size(s)
    check_eval_memory(task, cfg.lengths, n_problems=cfg.n_problems, batch_size=cfg.eval_batch_size)
    out = Path(cfg.out)
    run = demo_run(cfg)
    t0 = time.perf_counter()
    if record_path(out, run).is_file():
        print(f"toolssm demo: {out} holds this demo's finished run ({record_path(out, run)}): its results")
    else:
        print(f"toolssm demo: train {cfg.model.arch} on {cfg.task} of size <= {cfg.train_size}, "
              f"then test at sizes {', '.join(cfg.lengths)}")  # fmt: skip
    _setup(cfg.eval_threads)
    rec = execute(run, out, folder=out, progress=cfg.progress, resume=cfg.resume)
    print(f"trained in {rec['train_s']:.0f}s, evaluated in {rec['eval_s']:.0f}s; checkpoint: {out / 'checkpoint'}")
    _report(record_results(rec), out / "eval", train_size=cfg.train_size, label=cfg.model.arch, task=cfg.task,
            checkpoint=str(out / "checkpoint"), seeds={"eval_seed": run.eval_seed, "train_seed": cfg.seed})  # fmt: skip
    print(f"demo finished in {time.perf_counter() - t0:.0f}s (training {rec['train_s']:.0f}s). "
          f"Try: toolssm solve --checkpoint {cfg.out} {_example(task, cfg.lengths[0])} --trace")  # fmt: skip
    return 0


@dataclass
class CompareConfig:
    """Train several architectures with the demo recipe and compare their length generalization (Figure 2)."""

    models: Annotated[tuple[str, ...], choice(model_names, many=True)] = ("lstm", "gru", "mamba", "pythia", "mistral")
    """architectures (cpu presets), each trained with the demo recipe"""
    out: str = "runs/compare"
    """a sweep folder: one run per model (runs/, records/); a rerun skips the finished ones"""
    jobs: int = 2
    """models trained at once, each in its own process with one torch thread"""
    task: Annotated[str, choice(task_names)] = "addition"
    """task name"""
    train_size: int = 5
    """largest problem size seen in training"""
    steps: int = 2500
    """training steps of every model"""
    seed: int = 0
    """training seed of every model"""
    weight_decay: float = ADDITION_CPU["weight_decay"]
    """AdamW weight decay of every model (the demo's addition recipe)"""
    lengths: tuple[str, ...] = DEFAULT_LENGTHS
    """sizes to test"""
    n_problems: int = 20
    """test problems per size"""
    set: tuple[str, ...] = ()
    """more training settings for every model, key=value (e.g. lr=1e-3 model.d_model=32 batch_size=16)"""


def compare_plan(cfg: CompareConfig) -> list[Run]:
    """One run per model: the demo recipe with this compare's settings (a sweep plan)."""
    base = {"task": cfg.task, "train_size": cfg.train_size, "steps": cfg.steps, "seed": cfg.seed,
            "weight_decay": cfg.weight_decay}
    runs = []
    for m in cfg.models:
        train_fields = {**base, "model": {"arch": m}}
        for key, value in parse_overrides(cfg.set).items():
            train_fields = set_dotted(train_fields, key, value)
        runs.append(Run(experiment="compare", row=m, train=train_fields, lengths=tuple(cfg.lengths),
                        n_problems=cfg.n_problems, cost=CPU_COST.get(m, 1.0)))  # fmt: skip
    return runs


def run_compare(cfg: CompareConfig) -> int:
    from toolssm.models import model_names

    if not cfg.models:
        raise ValueError("no models to compare: give --models NAME [NAME ...]")
    for m in cfg.models:
        if m not in model_names():
            raise ValueError(f"unknown model {m!r} (choose from: {', '.join(model_names())})")
        if cfg.models.count(m) > 1:
            raise ValueError(f"model {m!r} is listed twice in --models: each model has one run")
    if cfg.jobs < 1:
        raise ValueError(f"bad jobs={cfg.jobs}: must be positive")
    check_out(cfg.out)
    _check_eval(cfg.lengths, cfg.n_problems, 1, 0, flags="--batch-size")
    task = get_task(cfg.task)
    runs = compare_plan(cfg)
    for r in runs:  # every model's config and every size, checked before any training
        r.train_config(Path("unused")).validate()
        for s in cfg.lengths:
            task.spec_size(s)
    out = Path(cfg.out)
    print(f"comparing {', '.join(cfg.models)} on {cfg.task} (train <= {cfg.train_size}), {cfg.jobs} at a time")
    records = sweep(runs, out, jobs=cfg.jobs, log=lambda line: print(line, flush=True))
    curves = {rec["row"]: record_curve(rec) for rec in records}
    table = format_comparison(curves, train_size=cfg.train_size)
    (out / "table.md").write_text(table + "\n")
    png = plot_curves(curves, out / "accuracy.png", train_size=cfg.train_size,
                      title=f"{cfg.task}: trained on size ≤ {cfg.train_size}")  # fmt: skip
    print()
    print(table)
    print(f"\nwrote {out / 'table.md'} and {png}")
    return 0


def run_reproduce_command(cfg: ReproduceConfig) -> int:
    """``toolssm reproduce``; an experiment that is a command (``theory``) runs through `COMMANDS`."""
    return run_reproduce(cfg, COMMANDS)


@dataclass
class ExportConfig:
    """Export a checkpoint for another library: a Hugging Face folder (weights, config, tokenizer) that
    transformers' AutoModelForCausalLM and AutoTokenizer load. Mamba, Mamba-2, Pythia and Mistral."""

    checkpoint: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="CHECKPOINT")]
    """checkpoint folder, or the run folder holding it"""
    out: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="OUT")]
    """the folder to write (new, or empty)"""
    to: str = "hf"
    """the format: hf (Hugging Face transformers)"""


def run_export(cfg: ExportConfig) -> int:
    from toolssm.export import export_hf

    if cfg.to != "hf":
        raise ValueError(f"unknown export format {cfg.to!r} (choose from: hf)")
    out = export_hf(cfg.checkpoint, cfg.out)
    print(f"wrote {out}: load it with transformers.AutoModelForCausalLM.from_pretrained({str(out)!r}) "
          f"and AutoTokenizer.from_pretrained({str(out)!r})")  # fmt: skip
    return 0


@dataclass
class DataConfig:
    """Write a task's expert trajectories as a dataset: JSONL (or parquet, with Hugging Face datasets), one record
    per trajectory with its problem, tokens and roles. The file is the online training stream for --seed and
    --batch-size, so `toolssm train --data FILE` with the same two trains exactly as online generation."""

    task: Annotated[str, choice(task_names)] = "addition"
    """task name"""
    size: int = 5
    """largest problem size, drawn as training draws (train's --train-size)"""
    n: int = 1000
    """number of trajectories"""
    out: str = "data/addition.jsonl"
    """.jsonl, or .parquet (needs the datasets extra)"""
    seed: int = 0
    """train's --seed"""
    batch_size: int = 32
    """train's --batch-size"""
    overwrite: bool = False
    """replace an existing --out file"""
    progress: bool = True
    """show a progress bar"""


def run_data(cfg: DataConfig) -> int:
    from toolssm.data import records, write_dataset

    task = get_task(cfg.task)
    try:
        task.spec_size(str(cfg.size))
    except ValueError as e:
        raise ValueError(f"bad --size {cfg.size}: {str(e).split(': ', 1)[-1]}") from None
    if cfg.n < 1 or cfg.batch_size < 1:
        raise ValueError(f"bad --n {cfg.n} / --batch-size {cfg.batch_size}: both must be positive")
    out = Path(cfg.out)
    if out.suffix not in (".jsonl", ".json", ".parquet"):
        raise ValueError(f"bad --out {out}: give a .jsonl or .parquet file")
    check_out(str(out.parent) if str(out.parent) else ".")
    if out.is_dir() or (out.exists() and not cfg.overwrite):
        raise ValueError(f"{out} already exists: choose another --out, or pass --overwrite")
    write_dataset(out, records(task, cfg.size, cfg.n, seed=cfg.seed, batch_size=cfg.batch_size), progress=cfg.progress)
    print(f"wrote {cfg.n} {task.name} trajectories (size <= {cfg.size}, seed {cfg.seed}, batch {cfg.batch_size}) "
          f"to {out}")  # fmt: skip
    return 0


COMMANDS = {
    "demo": (DemoConfig, run_demo),
    "compare": (CompareConfig, run_compare),
    "train": (TrainConfig, run_train),
    "eval": (EvalConfig, run_eval),
    "solve": (SolveConfig, run_solve),
    "collect": (CollectConfig, run_collect),
    "reproduce": (ReproduceConfig, run_reproduce_command),
    "report": (ReportConfig, run_report),
    "theory": (TheoryConfig, run_theory),
    "export": (ExportConfig, run_export),
    "data": (DataConfig, run_data),
    "analyze": (AnalyzeConfig, run_analyze),
}


_SEPARATOR = re.compile(r"^[─\-━ ]+$")


def _choice_error(msg: str) -> str | None:
    """tyro's "invalid choice 'x' for argument '--task'. Expected one of (...)." in the house style: what kind of
    name it was, the choices, and the closest one."""
    m = re.match(r"invalid choice '(.*)' for argument '([^']*)'\. Expected one of \((.*)\)\.?$", msg)
    if not m:
        return None
    value, flag, listed = m.groups()
    choices = re.findall(r"'([^']*)'", listed)
    first = flag.split("/")[0]
    noun = next((k for k in ("task", "preset", "device", "engine") if k in first), None)
    noun = noun or ("model" if any(k in first for k in ("model", "arch")) else f"value for {first}")
    close = difflib.get_close_matches(value, choices, n=1)
    hint = f"; perhaps you meant {close[0]}" if close else ""
    return f"unknown {noun} {value!r} (choose from: {', '.join(choices)}){hint}"


def _one_line(captured: str) -> str:
    """Condense tyro's boxed error message to one line: its first paragraph, and the flags it suggests."""
    lines = [re.sub(r"^[\s│╭╰─┃|]+|[\s│╮╯─┃|]+$", "", ln) for ln in captured.splitlines()]
    blocks: list[list[str]] = [[]]  # the title, then the paragraphs between tyro's rules
    for ln in lines:
        if ln and _SEPARATOR.match(ln):
            blocks.append([])
        elif ln:
            blocks[-1].append(ln)
    blocks = [b for b in blocks if b]
    if not blocks:
        return "bad command line (see --help)"
    rest = [b for b in blocks[1:] if not b[0].lower().startswith(("usage", "for full helptext"))]
    if rest:  # the first paragraph under the title, its wrapped lines joined
        msg = " ".join(rest[0])
    else:  # no rules: the title line, then the message
        msg = blocks[0][1] if len(blocks) == 1 and len(blocks[0]) > 1 else blocks[0][0]
    choice = _choice_error(re.sub(r"\s+", " ", msg))
    if choice:
        return f"{choice} (see --help)"
    raw = [re.sub(r"^[│┃|]|[│┃|]\s*$", "", ln).rstrip() for ln in captured.splitlines()]
    at = next((i for i, ln in enumerate(raw) if ln.strip().lower().startswith("perhaps you meant")), None)
    if at is not None:  # tyro's suggestions: the flags (or commands) it lists, less indented than their help lines
        msg = rest[0][0] if rest else msg  # the sentence before the suggestions
        listed = [ln for ln in raw[at + 1 :] if ln.strip() and not _SEPARATOR.match(ln.strip())]
        listed = listed[: next((i for i, ln in enumerate(listed) if ln.strip().lower().startswith("for full")), None)]
        indent = min((len(ln) - len(ln.lstrip()) for ln in listed), default=0)
        flags = [ln.split()[0] for ln in listed if len(ln) - len(ln.lstrip()) == indent]
        if flags:
            msg = f"{msg}; perhaps you meant {', '.join(dict.fromkeys(flags[:3]))}"
    return f"{msg} (see --help)"


def config_file_args(cls: type, args: list[str]) -> tuple[list[str], object | None]:
    """``--config FILE`` (train and demo): the file's config as the defaults, the other flags on top."""
    at = [i for i, a in enumerate(args) if a == "--config" or a.startswith("--config=")]
    if not at:
        return args, None
    if not issubclass(cls, TrainConfig):
        raise ValueError("--config takes a training config: it is for train and demo")
    if len(at) > 1:
        raise ValueError("--config given twice: give one file")
    i = at[0]
    if args[i] == "--config":
        if i + 1 >= len(args):
            raise ValueError("--config needs a file, e.g. --config runs/demo/train_config.json")
        path, rest = args[i + 1], args[:i] + args[i + 2 :]
    else:
        path, rest = args[i].split("=", 1)[1], args[:i] + args[i + 1 :]
    return rest, load_config_file(path, cls)


def _summary(cls: type) -> str:
    return (cls.__doc__ or "").strip().splitlines()[0]


def _commands_type(defaults: dict[str, object]):
    """Every command as one of tyro's subcommands (so ``--help``, usage and completion come from `COMMANDS`);
    ``defaults``: a command's config to start from (``--config FILE``)."""
    members = [
        Annotated[cls, tyro.conf.subcommand(name, default=defaults.get(name, tyro.MISSING_NONPROP),
                                            description=_summary(cls), prefix_name=False)]  # fmt: skip
        for name, (cls, _) in COMMANDS.items()
    ]
    return Union[tuple(members)]  # noqa: UP007 - built at run time


def parse(argv: list[str]):
    """The command's config and its function; tyro's own errors condensed to one line."""
    if not argv:
        raise ValueError(f"missing command (choose from: {', '.join(COMMANDS)}; see toolssm --help)")
    if not argv[0].startswith("-") and argv[0] not in COMMANDS:
        close = difflib.get_close_matches(argv[0], COMMANDS, n=1)
        hint = f"; perhaps you meant {close[0]}" if close else ""
        raise ValueError(f"unknown command {argv[0]!r} (choose from: {', '.join(COMMANDS)}){hint}")
    defaults = {}
    if argv[0] in COMMANDS:
        rest, default = config_file_args(COMMANDS[argv[0]][0], argv[1:])
        if default is not None:
            argv, defaults = [argv[0], *rest], {argv[0]: default}
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            cfg = tyro.cli(_commands_type(defaults), args=argv, prog="toolssm", description=__doc__.split("\n\n")[0])
    except SystemExit as e:
        if e.code in (0, None):  # --help
            sys.stdout.write(buf.getvalue())
            raise
        raise ValueError(_one_line(buf.getvalue())) from None
    fn = next(fn for cls, fn in COMMANDS.values() if type(cfg) is cls)
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

