"""Training: online expert trajectories, masked next-token loss, AdamW with warmup and cosine decay.

Flat on purpose, in the manner of nanoGPT. Every batch is a pure function of ``(seed, step)``, so a run
resumed from a checkpoint is the run that would have happened without the stop.

Stopping loses nothing. Ctrl-C (SIGINT) or SIGTERM during training finishes the current step, saves a
checkpoint there and raises KeyboardInterrupt (a second Ctrl-C aborts at once); ``time_limit`` does the same
after that many seconds of training and raises `TimeLimitReached`. ``--resume`` then continues exactly.

Data parallel: launched under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the same entry point
trains with ``torch.nn.parallel.DistributedDataParallel`` (gloo on CPU, nccl on CUDA). ``batch_size`` is
the *global* batch: every rank draws the same ``(seed, step)`` problems and demonstrates its contiguous
slice. Each rank's loss is its masked-token sum over the global token count (all-reduced), times the world
size, because DDP averages gradients over ranks: the gradient is then exactly the single-process gradient
of the global batch, and the logged loss the global-batch mean. Only rank 0 writes checkpoints and logs.

    torchrun --nproc_per_node 2 -m toolssm.cli train --batch-size 64 --out runs/ddp

Fine-tuning a pretrained model: ``--init-from FOLDER`` (a Hugging Face Mamba, Mamba-2 or GPT-NeoX/Pythia folder,
`toolssm.models.hf`) takes the architecture and its settings from the folder's config.json (a ``--model.*`` flag
other than ``--model <that arch>`` is a one-line error) and starts from its weights, re-indexed to the
task's vocabulary (`toolssm.models.hf.remap_vocab`). A text task (codefix) tokenizes with the folder's
``tokenizer.json`` (`Task.adopt_tokenizer`), so its pieces keep their pretrained rows and only the specials and
tool tokens are new; a task with its own symbols keeps the rows of the symbols the tokenizer spells the same
(digits, say) and warns how many are new. The saved checkpoint is an ordinary one (the tokenizer with it);
``--resume`` continues from it and reads nothing but config.json and tokenizer.json from FOLDER.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import signal
import threading
import time
import warnings
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Annotated

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm.auto import tqdm

from toolssm.batching import collate
from toolssm.checkpoint import (
    find_checkpoint,
    load_checkpoint,
    load_train_state,
    read_config,
    save_checkpoint,
    task_format,
)
from toolssm.choices import choice, device_names
from toolssm.data import load_stored, stored_batch
from toolssm.evaluate import evaluate_size
from toolssm.limits import check_steps, check_train_memory
from toolssm.loggers import MetricsLogger, check_loggers
from toolssm.models import ModelConfig, SequenceModel, build_model, n_params, resolve, set_grad_checkpoint
from toolssm.models.hf import load_hf_remapped, local_folder, read_hf_config
from toolssm.paths import RunLock, check_out  # noqa: F401  (check_out: imported from here by other modules)
from toolssm.protocol import PAD, Trajectory, Vocab
from toolssm.tasks import Task, get_task, task_names


#: TrainConfig fields that say where and how a run goes, not what it learns: a resumed run may change them
RUNTIME_FIELDS = ("out", "resume", "progress", "threads", "device", "save_every", "log_every", "time_limit",
                  "grad_checkpoint", "eval_every", "eval_sizes", "eval_problems", "keep_checkpoints", "logger")  # fmt: skip

#: the evaluation seed of ``--eval-every`` (that of ``toolssm eval``): every evaluation scores the same problems
EVAL_SEED = 1234


@dataclass
class TrainConfig:
    """Train a model on a task's expert trajectories."""

    task: Annotated[str, choice(task_names)] = "addition"
    """task name"""
    train_size: int = 5
    """largest problem size seen in training (digits for addition)"""
    data: str = ""
    """train on these stored trajectories instead of the task's expert run online: a `toolssm data` file (JSONL or
    parquet, read in order: with its seed and batch size, the online run's batches) or a task's own (codefix JSONL)"""
    max_len: int = 0
    """crop each training trajectory to its first max_len tokens (0: no crop; the paper's code runs: 8192)"""
    mix: tuple[str, ...] = ()
    """auxiliary tasks as task:weight, e.g. addition:0.33: that fraction of each batch comes from the task"""
    model: ModelConfig = field(default_factory=ModelConfig)
    init_from: str = ""
    """start from a Hugging Face checkpoint folder or Hub id owner/name (Mamba, Mamba-2, GPT-NeoX/Pythia, Mistral:
    config.json, weights, and tokenizer.json for a text task); its config sets the model, so --model.* flags are
    refused. A Hub id is fetched with huggingface_hub (its cache and HF_HUB_OFFLINE=1 are honoured)"""
    steps: int = 2500
    """optimizer steps"""
    batch_size: int = 32
    """problems per step (the global batch under torchrun)"""
    lr: float = 3e-3
    """peak learning rate"""
    min_lr: float = 1e-4
    """learning rate at the end of the cosine decay"""
    warmup: int = 100
    """linear warmup steps"""
    weight_decay: float = 0.0
    """AdamW weight decay"""
    grad_clip: float = 1.0
    """clip the gradient norm to this (0: no clipping)"""
    seed: int = 0
    """seed of the model's initialisation and of every batch (a batch is a function of seed and step)"""
    out: str = "runs/train"
    """run folder: checkpoint/, log.jsonl"""
    resume: bool = False
    """continue from the checkpoint in ``out`` if there is one"""
    save_every: int = 500
    """save a checkpoint every N steps (and at the end, and on a stop)"""
    log_every: int = 25
    """write a training row to log.jsonl every N steps"""
    device: Annotated[str, choice(device_names)] = "auto"
    """auto (cuda when present), cpu or cuda"""
    threads: int = 0
    """torch CPU threads (0: torch's default)"""
    grad_checkpoint: bool = False
    """activation checkpointing: recompute each layer's activations in the backward instead of keeping them
    (memory of one layer's activations, not all; ~1/3 more compute; not for lstm/gru)"""
    progress: bool = True
    """show a progress bar"""
    time_limit: float = 0.0
    """seconds of training in this process, then stop at a step boundary with a checkpoint (0: none); the
    command exits 124 and ``--resume`` continues exactly"""
    eval_every: int = 0
    """evaluate the model being trained every N steps (0: never): answer EM, trajectory EM and token accuracy
    per size, written as rows to the metrics log and drawn against the step in eval_curve.png"""
    eval_sizes: tuple[str, ...] = ()
    """sizes for --eval-every (default: the training size); e.g. 5 10 100"""
    eval_problems: int = 20
    """problems per size for --eval-every (the same problems at every evaluation)"""
    keep_checkpoints: bool = False
    """with --eval-every: keep the checkpoint of every evaluation in checkpoints/step-N (else only the latest)"""
    logger: tuple[str, ...] = ("jsonl",)
    """where metrics go: jsonl (always, log.jsonl), tensorboard, wandb (optional extras); e.g. jsonl,tensorboard"""

    def validate(self) -> None:
        get_task(self.task)  # raises on an unknown task
        parse_mix(self)
        resolve(self.model)
        self.pretrained_arch()
        if self.max_len < 0 or self.max_len == 1:
            raise ValueError(f"bad max_len={self.max_len}: 0 (no crop) or at least 2 (a token and its next)")
        if self.threads < 0:
            raise ValueError(f"bad threads={self.threads}: must be >= 0 (0: torch's default)")
        check_device(self.device)
        check_out(self.out)
        if not self.time_limit >= 0:
            raise ValueError(f"bad time_limit={self.time_limit}: must be >= 0 seconds (0: none)")
        for name in ("train_size", "steps", "batch_size", "save_every", "log_every", "eval_problems"):
            if getattr(self, name) < 1:
                raise ValueError(f"bad {name}={getattr(self, name)}: must be positive")
        check_steps(steps=self.steps, save_every=self.save_every, log_every=self.log_every, warmup=self.warmup)
        if self.eval_every < 0:
            raise ValueError(f"bad eval_every={self.eval_every}: must be >= 0 (0: no evaluation during training)")
        if (self.eval_sizes or self.keep_checkpoints) and not self.eval_every:
            raise ValueError("--eval-sizes and --keep-checkpoints go with --eval-every N")
        for spec in self.eval_sizes:
            get_task(self.task).spec_size(spec)
        check_loggers(self.loggers())
        if not self.data:  # the largest size drawn must be one the task has (e.g. Hanoi: at most 100 disks)
            try:
                get_task(self.task).spec_size(str(self.train_size))
            except ValueError as e:
                raise ValueError(f"bad train_size={self.train_size}: {str(e).split(': ', 1)[-1]}") from None
        if not all(math.isfinite(x) for x in (self.lr, self.min_lr, self.grad_clip, self.weight_decay)):
            raise ValueError("bad optimizer setting: lr, min_lr, grad_clip and weight_decay must be finite numbers")
        if self.lr <= 0 or self.min_lr < 0 or self.warmup < 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise ValueError("bad optimizer setting: lr must be positive; min_lr, warmup, grad_clip, weight_decay >= 0")

    def loggers(self) -> tuple[str, ...]:
        """The chosen loggers, ``jsonl`` first and always (``--logger jsonl,tensorboard`` or space-separated)."""
        names = [n.strip() for entry in self.logger for n in entry.split(",") if n.strip()]
        return tuple(dict.fromkeys(["jsonl", *names]))

    def pretrained_arch(self) -> str | None:
        """The architecture ``init_from`` sets (None without it); a one-line error for a folder that is not a
        supported checkpoint, or for --model.* flags that would set the model too."""
        if not self.init_from:
            return None
        try:
            arch = read_hf_config(self.init_from)[0]
        except FileNotFoundError as e:
            raise ValueError(str(e)) from None
        default = ModelConfig()
        given = [f.name for f in fields(ModelConfig) if getattr(self.model, f.name) != getattr(default, f.name)]
        given = [g for g in given if not (g == "arch" and self.model.arch == arch)]
        if given:
            flags = ", ".join(f"--model.{g}" for g in given)
            why = f"--init-from {self.init_from} sets the model ({arch}, from its config.json)"
            raise ValueError(f"{why}: drop {flags}")
        return arch


def load_config_file(path: str | Path, cls: type = TrainConfig):
    """A config from a file: a saved ``train_config.json``, or the same fields as TOML or YAML (``model`` a
    table of its own). Fields left out keep ``cls``'s defaults, and flags given beside ``--config`` go on top
    (`toolssm.cli`). A one-line error names the file and the field for an unknown field or a value of the
    wrong type."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read config file {path}: {e}") from None
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ValueError(f"config file {path}: YAML needs the pyyaml package (or use JSON or TOML)") from None
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except ValueError as e:  # json.JSONDecodeError, tomllib.TOMLDecodeError and yaml's errors
        raise ValueError(f"config file {path} does not parse: {str(e).splitlines()[0]}") from None
    except Exception as e:  # noqa: BLE001 - yaml.YAMLError is not a ValueError
        raise ValueError(f"config file {path} does not parse: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {path}: expected a table of fields, got {type(data).__name__}")
    return _dataclass_from(cls, data, f"config file {path}")


def _dataclass_from(cls: type, data: dict, where: str, prefix: str = ""):
    """``cls(**data)``, each value checked against the type of the field's default (nested dataclasses too)."""
    kinds = {f.name: f for f in fields(cls)}
    values = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in kinds:
            raise ValueError(f"{where}: unknown field '{prefix}{key}' (see toolssm train --help)")
        f = kinds[name]
        default = f.default_factory() if f.default_factory is not MISSING else f.default  # type: ignore[misc]
        if is_dataclass(default):
            if not isinstance(value, dict):
                raise ValueError(f"{where}: {prefix}{key} must be a table of fields")
            value = _dataclass_from(type(default), value, where, f"{prefix}{name}.")
        elif default is not None:
            value = _checked(value, default, f"{where}: {prefix}{key}")
        values[name] = value
    return cls(**values)


def _checked(value, default, what: str):
    """``value`` as the type of ``default`` (bool, int, float, str or a tuple), or a one-line error."""
    kind = type(default)
    if kind is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
            raise ValueError(f"{what} must be a list")
        return tuple(str(v) for v in value)
    ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ValueError(f"{what} must be {kind.__name__}, got {value!r}")
    return value


def check_device(name: str) -> None:
    """A one-line error for a device string torch cannot parse (``auto`` is ours)."""
    if name != "auto":
        try:
            torch.device(name)
        except (RuntimeError, ValueError):
            raise ValueError(f"bad device {name!r}: choose auto, cpu, cuda or cuda:N") from None


def resolve_device(name: str) -> torch.device:
    """auto, cpu or cuda[:i] -> the device; a one-line error when CUDA is asked for and absent. On CUDA, float32
    matrix products may use TF32 (as nanoGPT does): faster on Ampere and Hopper, while every elementwise state
    update (the scans, the gates) stays in float32."""
    check_device(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but no CUDA device is available")
    if name.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return torch.device(name)


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def parse_mix(cfg: TrainConfig) -> list[tuple[Task, float]]:
    """The auxiliary tasks and their batch fractions, from ``cfg.mix`` entries ``task:weight``."""
    mix = []
    for entry in cfg.mix:
        name, _, w = entry.rpartition(":")
        try:
            weight = float(w)
        except ValueError:
            weight = -1.0
        if not name or not 0 < weight < 1 or name == cfg.task or name in [t.name for t, _ in mix]:
            raise ValueError(f"bad mix entry {entry!r}: expected task:weight, 0 < weight < 1, one per auxiliary task")
        mix.append((get_task(name), weight))
    if sum(w for _, w in mix) >= 1:
        raise ValueError(f"bad mix {' '.join(cfg.mix)}: the weights must sum to less than 1")
    return mix


def mixed_vocab(task: Task, mix: list[tuple[Task, float]]) -> Vocab:
    """The primary task's vocabulary, then every auxiliary task's new tokens."""
    return Vocab([*task.vocab().tokens, *(t for aux, _ in mix for t in aux.vocab().tokens)])


def make_batch(
    task: Task,
    vocab: Vocab,
    cfg: TrainConfig,
    step: int,
    dataset: list[Trajectory] | None = None,
    rank: int = 0,
    world: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The step's global batch, or with ``world`` > 1 rank ``rank``'s contiguous slice of it: every rank
    draws all the problems from the same rng and demonstrates only its own. ``dataset``: stored trajectories
    (a task's ``load_data``) instead of the expert."""
    rng = random.Random(f"{cfg.seed}:{step}")  # a string seed is hashed deterministically
    per = cfg.batch_size // world
    mine = slice(rank * per, (rank + 1) * per)  # this rank's part of the global batch
    if dataset is not None:  # a dataset file in order, other stored trajectories by a seeded draw (toolssm.data)
        trajs = stored_batch(dataset, step, cfg.batch_size, cfg.seed)[mine]
        if cfg.max_len:
            trajs = [Trajectory(t.tokens[: cfg.max_len], t.roles[: cfg.max_len]) for t in trajs]
        return collate(trajs, vocab)
    mix = parse_mix(cfg)
    drawn = []
    for _ in range(cfg.batch_size):
        t = task
        if mix:  # one more draw picks the task (so with no mix, the batches are what they always were)
            u = rng.random()
            for aux, weight in mix:
                if u < weight:
                    t = aux
                    break
                u -= weight
        drawn.append((t, t.sample(rng, cfg.train_size)))
    return collate([t.demonstrate(p) for t, p in drawn[mine]], vocab)


def masked_loss(model: SequenceModel, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy on trained positions only (thoughts, commands, outputs)."""
    logits, _ = model(tokens[:, :-1])
    target, m = tokens[:, 1:], mask[:, 1:]
    return F.cross_entropy(logits[m], target[m])


def masked_loss_sum(model: torch.nn.Module, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The summed next-token cross-entropy on trained positions, and their count."""
    logits, _ = model(tokens[:, :-1])
    target, m = tokens[:, 1:], mask[:, 1:]
    return F.cross_entropy(logits[m], target[m], reduction="sum"), int(m.sum())


def init_distributed(device_name: str) -> tuple[int, int, torch.device | None]:
    """(rank, world size, device) under torchrun; (0, 1, None) otherwise. Starts the process group
    (nccl on CUDA, gloo on CPU) unless the caller already did."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, None
    device = resolve_device(device_name)
    if device.type == "cuda":
        local, gpus = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
        if local >= gpus:
            raise ValueError(f"local rank {local} has no GPU of its own ({gpus} visible): start at most {gpus} "
                             f"processes per node (torchrun --nproc-per-node {gpus}), or train on gloo with --device cpu")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def _describe(config: dict) -> str:
    """'lstm on addition, step 3 of 6' for a checkpoint's config (what a refusal names)."""
    train = config.get("train") or {}
    return f"{config.get('arch')} on {config.get('task')}, step {config.get('step')} of {train.get('steps')}"


def _check_resumable(out: Path, loaded, cfg: TrainConfig, arch: str, model_kwargs: dict, vocab: Vocab) -> None:
    """A one-line refusal naming what differs, when the checkpoint in ``out`` is not this config's run."""
    mine = {"task": cfg.task, "model": arch, "model settings": model_kwargs, "vocabulary": vocab}
    theirs = {"task": loaded.task, "model": loaded.arch, "model settings": loaded.config["model"],
              "vocabulary": loaded.vocab}  # fmt: skip
    what = [k for k in mine if mine[k] != theirs[k]]
    if what and what != ["vocabulary"]:
        pairs = ", ".join(f"{k} {theirs[k]} here, {mine[k]} asked" for k in what if k != "vocabulary")
    elif what:
        pairs = "its vocabulary differs from this config's (another --mix or tokenizer?)"
    else:
        saved, now = loaded.config.get("train") or {}, json.loads(json.dumps(asdict(cfg)))  # as it was saved
        diff = [k for k in now if k in saved and k != "model" and k not in RUNTIME_FIELDS and saved[k] != now[k]]
        if not diff:
            return
        pairs = ", ".join(f"{k}={saved[k]!r} here, {now[k]!r} asked" for k in diff)
    raise ValueError(f"cannot resume {out} ({_describe(loaded.config)}): {pairs}; pass the same settings, or choose "
                     f"another --out")  # fmt: skip


class TimeLimitReached(Exception):
    """Training stopped at ``time_limit``, at a step boundary, with a checkpoint saved there."""


class _Stop:
    """Graceful stops at a step boundary. While active (in the main thread), the first SIGINT or SIGTERM only
    asks the loop to stop after the current step; a second SIGINT aborts at once (repeated SIGTERMs, as a process
    pool sends them, do not), and so does a step still running ``GRACE`` seconds after the signal (a sender
    such as `timeout` may never follow up with SIGKILL). ``poll`` says why to stop: 0 go on, 1 time limit,
    2 signal."""

    GRACE = 60.0

    def __init__(self, time_limit: float, t0: float) -> None:
        self.time_limit, self.t0, self.signal = time_limit, t0, 0
        self.old: dict[int, object] = {}

    def __enter__(self) -> _Stop:
        if threading.current_thread() is threading.main_thread():
            for sig, handler in ((signal.SIGINT, self._handle), (signal.SIGTERM, self._handle),
                                 (signal.SIGALRM, self._overdue)):  # fmt: skip
                self.old[sig] = signal.signal(sig, handler)
        return self

    def __exit__(self, *exc) -> None:
        if self.old:
            signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, old in self.old.items():
            signal.signal(sig, old)

    def _handle(self, signum: int, frame) -> None:
        if self.signal and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: abort now, without a checkpoint at this step
        if not self.signal:
            # os.write, not print: the handler may run while tqdm is inside a write to sys.stderr, and a buffered
            # write re-entered from a handler raises RuntimeError
            os.write(2, f"\ntoolssm: {signal.Signals(signum).name}: stopping after this step and saving a checkpoint "
                        f"(Ctrl-C again aborts at once)\n".encode())  # fmt: skip
            signal.setitimer(signal.ITIMER_REAL, self.GRACE)
        self.signal = signum

    def _overdue(self, signum: int, frame) -> None:
        raise KeyboardInterrupt(f"the step did not end within {self.GRACE:g} s of the signal: aborted, the last "
                                f"checkpoint is the one before it")  # fmt: skip

    def poll(self) -> int:
        if self.signal:
            return 2
        return int(self.time_limit > 0 and time.perf_counter() - self.t0 >= self.time_limit)


def evaluate_during_training(
    model: SequenceModel, task: Task, vocab: Vocab, cfg: TrainConfig, step: int, device: torch.device
) -> list[dict]:
    """The metrics-log rows of one evaluation of the model being trained: one per size, the same problems
    (seed `EVAL_SEED`) at every step. Decoding is greedy and draws no random numbers, so training goes on
    exactly as it would have without it."""
    rows = []
    for spec in cfg.eval_sizes or (str(cfg.train_size),):
        r = evaluate_size(model, task, vocab, spec, n_problems=cfg.eval_problems, seed=EVAL_SEED,
                          batch_size=cfg.eval_problems, device=device)  # fmt: skip
        rows.append({"step": step, "eval_size": spec, "answer_acc": r.answer_acc, "trajectory_acc": r.trajectory_acc,
                     "token_acc": r.token_acc, "n": r.n, "seconds": round(r.seconds, 2)})  # fmt: skip
    return rows


def keep_checkpoint(ckpt: Path, out: Path, step: int) -> Path:
    """Copy the checkpoint just saved at ``step`` to ``out/checkpoints/step-N`` (written aside, then renamed,
    so a kept checkpoint is whole or absent)."""
    dest = out / "checkpoints" / f"step-{step:07d}"
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(ckpt, tmp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def plot_eval_curve(log: Path, path: Path, *, title: str = "") -> Path | None:
    """Answer exact match against training step, one line per evaluated size, from a metrics log's
    evaluation rows (None when it has none)."""
    from toolssm.plots import plot_training_curve
    from toolssm.loggers import read_log

    rows = [r for r in read_log(log) if "eval_size" in r]
    return plot_training_curve(rows, path, title=title) if rows else None


def train(cfg: TrainConfig) -> Path:
    """Run (or resume) training; returns the checkpoint folder."""
    return fit(cfg)[0]


def fit(cfg: TrainConfig) -> tuple[Path, SequenceModel]:
    """Run (or resume) training; returns the checkpoint folder and the trained model (every rank's). The writing
    rank holds the run folder's lock (`toolssm.paths.RunLock`) throughout: a second training into the same
    folder is refused in one line."""
    cfg.validate()
    lead = (dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))) == 0  # the writer
    with RunLock(cfg.out) if lead else contextlib.nullcontext():
        return _fit(cfg)


def _truncate_log(path: Path, step: int) -> None:
    """Drop the log's records after ``step`` (and any torn line), so a resumed run logs each step once. Written
    aside and renamed, so a stop here leaves the old log or the new one."""
    if not path.is_file():
        return
    keep, dropped = [], False
    for line in path.read_bytes().decode("utf-8", "replace").splitlines():
        try:
            rec = json.loads(line)
            ok = isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= step
        except json.JSONDecodeError:
            ok = False
        if ok:
            keep.append(line)
        dropped = dropped or not ok
    if dropped:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(line + "\n" for line in keep))
        os.replace(tmp, path)


def _fit(cfg: TrainConfig) -> tuple[Path, SequenceModel]:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rank, world, ddp_device = init_distributed(cfg.device)
    if cfg.batch_size % world:
        raise ValueError(f"bad batch_size={cfg.batch_size}: the global batch must split evenly over {world} ranks")
    device = ddp_device or resolve_device(cfg.device)
    task = get_task(cfg.task)
    if not cfg.data and not cfg.init_from:  # a batch that cannot fit is refused before anything is built or drawn
        check_train_memory(task, train_size=cfg.train_size, batch_size=cfg.batch_size, max_len=cfg.max_len,
                           vocab_size=len(mixed_vocab(task, parse_mix(cfg))), model_kwargs=resolve(cfg.model),
                           world=world, device=device)  # fmt: skip
    init_from = str(local_folder(cfg.init_from)) if cfg.init_from else ""  # a Hub id: its downloaded folder
    text_task = bool(init_from) and task.adopt_tokenizer(init_from)  # the checkpoint's pieces
    dataset = load_stored(task, cfg.data) if cfg.data else None  # may load the task's tokenizer (toolssm.data)
    vocab = mixed_vocab(task, parse_mix(cfg))
    if cfg.init_from:
        arch, model_kwargs, _ = read_hf_config(init_from)
    else:
        arch, model_kwargs = cfg.model.arch, resolve(cfg.model)
    out = Path(cfg.out)
    resuming = any((out / d / "config.json").is_file() for d in ("checkpoint", "checkpoint.prev"))
    if resuming and not cfg.resume:  # before anything is written: the run there is not replaced without a word
        raise ValueError(f"{out} already holds a checkpoint ({_describe(read_config(out)[1])}): pass --resume to "
                         f"continue it, or choose another --out")  # fmt: skip

    torch.manual_seed(cfg.seed)
    if cfg.init_from and not resuming:  # the pretrained weights, in our vocabulary's order
        try:
            model, _, _, new, _ = load_hf_remapped(init_from, vocab.tokens)
        except FileNotFoundError as e:  # no weights beside the config
            raise ValueError(str(e)) from None
        if not text_task and rank == 0:
            warnings.warn(
                f"task {cfg.task} has its own vocabulary, not the tokenizer of {cfg.init_from}: {len(new)} of its "
                f"{len(vocab)} tokens start at the mean embedding, the others keep the rows of the pieces they spell",
                stacklevel=2,
            )
        model = model.to(device)
    else:
        model = build_model(arch, len(vocab), model_kwargs).to(device)
    set_grad_checkpoint(model, cfg.grad_checkpoint)
    counting = getattr(model, "trains_by_counting", False)  # a table learner (models/kgram.py): no gradients
    if counting and world > 1:
        raise ValueError(f"{arch} trains by counting, in one process: run it without torchrun")
    opt = None if counting else torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95),
                                                  weight_decay=cfg.weight_decay)  # fmt: skip
    start = 0
    if resuming:
        loaded = load_checkpoint(out, device)
        _check_resumable(out, loaded, cfg, arch, model_kwargs, vocab)
        model.load_state_dict(loaded.model.state_dict())
        state = {"step": loaded.step} if counting else load_train_state(find_checkpoint(out))
        if opt is not None:
            opt.load_state_dict(state["optimizer"])
        start = state["step"]
        if rank == 0:
            done = " (finished: nothing to train)" if start >= cfg.steps else ""
            print(f"continuing {out} from step {start} of {cfg.steps}{done}", flush=True)
    lead = rank == 0  # the one rank that writes
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if lead and start < cfg.steps:  # a finished run's folder is left as it is
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    if lead and start:  # the steps after the checkpoint's are trained (and logged) again
        _truncate_log(out / "log.jsonl", start)

    def save(step: int) -> Path:
        return save_checkpoint(
            out, model, arch=arch, model_kwargs=model_kwargs, vocab=vocab, task=cfg.task,
            step=step, train_config=asdict(cfg), optimizer=opt, task_format=task_format(task),
            extra_files=task.assets(),
        )  # fmt: skip

    metrics = MetricsLogger(out, cfg.loggers(), config=asdict(cfg)) if lead else None
    bar = tqdm(
        total=cfg.steps, initial=start, disable=not (cfg.progress and lead), dynamic_ncols=True,
        desc=f"train {arch}/{cfg.task} ({n_params(model) / 1e6:.2f}M params)",
    )  # fmt: skip
    model.train()
    t0, n_tok = time.perf_counter(), 0
    ckpt = find_checkpoint(out) if start else None
    why = 0  # why training stops early: 1 time limit, 2 signal (_Stop.poll)
    with _Stop(cfg.time_limit, t0) as stop:
        for step in range(start, cfg.steps):
            lr = lr_at(step, cfg)
            for g in opt.param_groups if opt is not None else ():
                g["lr"] = lr
            tokens, mask = make_batch(task, vocab, cfg, step, dataset, rank, world)
            tokens, mask = tokens.to(device), mask.to(device)
            if opt is not None:
                opt.zero_grad(set_to_none=True)
            n_step_tok = int(mask[:, 1:].sum())
            if counting:  # count the batch into the table; the loss is the table's on it before counting
                loss = torch.tensor(model.fit_counts(tokens, mask))
            elif world == 1:
                loss = masked_loss(model, tokens, mask)
                loss.backward()
            else:  # normalize by the global token count; DDP's gradient average over ranks is undone by * world
                loss_sum, count = masked_loss_sum(net, tokens, mask)
                flag = (0, 1, world + 1)[stop.poll()]  # summed over ranks: > world iff some rank got a signal
                totals = torch.tensor([count, loss_sum.item(), flag], dtype=torch.float64, device=device)
                dist.all_reduce(totals)
                (loss_sum * (world / totals[0].item())).backward()
                loss = totals[1] / totals[0]  # the global-batch mean, for the log
                n_step_tok = int(totals[0].item())
            gnorm = None
            if opt is not None:
                gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip else None
                opt.step()
            n_tok += n_step_tok  # trained tokens of the global batch
            bar.update(1)
            if lead and ((step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps):
                rec = {
                    "step": step + 1, "loss": loss.item(), "lr": lr,
                    "grad_norm": None if gnorm is None else round(float(gnorm), 4),
                    "tokens_per_s": round(n_tok / (time.perf_counter() - t0), 1),
                    "elapsed_s": round(time.perf_counter() - t0, 2),
                }  # fmt: skip
                metrics.log(rec)
                bar.set_postfix(loss=f"{rec['loss']:.4f}")
            if lead and ((step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps):
                ckpt = save(step + 1)
            if lead and cfg.eval_every and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps):
                t_eval = time.perf_counter()
                for row in evaluate_during_training(model, task, vocab, cfg, step + 1, device):
                    metrics.log(row)
                if cfg.keep_checkpoints:
                    if (step + 1) % cfg.save_every and step + 1 != cfg.steps:
                        ckpt = save(step + 1)
                    keep_checkpoint(ckpt, out, step + 1)
                plot_eval_curve(out / "log.jsonl", out / "eval_curve.png", title=f"{arch} on {cfg.task}")
                model.train()
                paused = time.perf_counter() - t_eval  # evaluating is not training: off the clocks
                t0, stop.t0 = t0 + paused, stop.t0 + paused
            # every rank decides from the same all-reduced flags, so all stop at the same step
            if step + 1 < cfg.steps:  # after the last step there is nothing left to stop
                why = stop.poll() if world == 1 else (0 if not totals[2] else 2 if totals[2] > world else 1)
            if why:
                if lead and (step + 1) % cfg.save_every:
                    ckpt = save(step + 1)
                break
    bar.close()
    if metrics is not None:
        metrics.close()
    if world > 1:
        dist.barrier()  # the last checkpoint is on disk before any rank returns (or stops)
    if why:
        at = f"at step {step + 1} of {cfg.steps}; checkpoint saved in {out}: rerun with --resume to continue"
        if why == 2:
            raise KeyboardInterrupt(f"stopped {at}")
        raise TimeLimitReached(f"time limit ({cfg.time_limit:g} s of training) reached {at}")
    if ckpt is None:  # nothing to do (resumed at the last step), or not the writing rank
        ckpt = find_checkpoint(out)
    return ckpt, model
