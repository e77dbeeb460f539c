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

import json
import math
import os
import random
import signal
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm.auto import tqdm

from toolssm.checkpoint import (
    find_checkpoint,
    load_checkpoint,
    load_train_state,
    read_config,
    save_checkpoint,
    task_format,
)
from toolssm.models import ModelConfig, SequenceModel, build_model, n_params, resolve, set_grad_checkpoint
from toolssm.models.hf import load_hf_remapped, read_hf_config
from toolssm.protocol import PAD, Trajectory, Vocab
from toolssm.tasks import Task, get_task


#: TrainConfig fields that say where and how a run goes, not what it learns: a resumed run may change them
RUNTIME_FIELDS = ("out", "resume", "progress", "threads", "device", "save_every", "log_every", "time_limit",
                  "grad_checkpoint")  # fmt: skip


@dataclass
class TrainConfig:
    """Train a model on a task's expert trajectories."""

    task: str = "addition"
    """task name"""
    train_size: int = 5
    """largest problem size seen in training (digits for addition)"""
    data: str = ""
    """train on these stored trajectories (e.g. codefix JSONL) instead of the task's expert run online"""
    max_len: int = 0
    """crop each training trajectory to its first max_len tokens (0: no crop; the paper's code runs: 8192)"""
    mix: tuple[str, ...] = ()
    """auxiliary tasks as task:weight, e.g. addition:0.33: that fraction of each batch comes from the task"""
    model: ModelConfig = field(default_factory=ModelConfig)
    init_from: str = ""
    """start from a Hugging Face checkpoint folder (Mamba, Mamba-2, GPT-NeoX/Pythia: config.json, weights, and
    tokenizer.json for a text task); its config sets the model, so --model.* flags are refused"""
    steps: int = 2500
    batch_size: int = 32
    lr: float = 3e-3
    """peak learning rate"""
    min_lr: float = 1e-4
    """learning rate at the end of the cosine decay"""
    warmup: int = 100
    """linear warmup steps"""
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    out: str = "runs/train"
    """run folder: checkpoint/, log.jsonl"""
    resume: bool = False
    """continue from the checkpoint in ``out`` if there is one"""
    save_every: int = 500
    log_every: int = 25
    device: str = "auto"
    """auto (cuda when present), cpu or cuda"""
    threads: int = 0
    """torch CPU threads (0: torch's default)"""
    grad_checkpoint: bool = False
    """activation checkpointing: recompute each layer's activations in the backward instead of keeping them
    (memory of one layer's activations, not all; ~1/3 more compute; not for lstm/gru)"""
    progress: bool = True
    time_limit: float = 0.0
    """seconds of training in this process, then stop at a step boundary with a checkpoint (0: none); the
    command exits 124 and ``--resume`` continues exactly"""

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
        for name in ("train_size", "steps", "batch_size", "save_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"bad {name}={getattr(self, name)}: must be positive")
        if not self.data:  # the largest size drawn must be one the task has (e.g. Hanoi: at most 100 disks)
            try:
                get_task(self.task).spec_size(str(self.train_size))
            except ValueError as e:
                raise ValueError(f"bad train_size={self.train_size}: {str(e).split(': ', 1)[-1]}") from None
        if not all(math.isfinite(x) for x in (self.lr, self.min_lr, self.grad_clip, self.weight_decay)):
            raise ValueError("bad optimizer setting: lr, min_lr, grad_clip and weight_decay must be finite numbers")
        if self.lr <= 0 or self.min_lr < 0 or self.warmup < 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise ValueError("bad optimizer setting: lr must be positive; min_lr, warmup, grad_clip, weight_decay >= 0")

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


def check_device(name: str) -> None:
    """A one-line error for a device string torch cannot parse (``auto`` is ours)."""
    if name != "auto":
        try:
            torch.device(name)
        except (RuntimeError, ValueError):
            raise ValueError(f"bad device {name!r}: choose auto, cpu, cuda or cuda:N") from None


def check_out(out: str, flag: str = "--out") -> None:
    """A one-line error, before any work, for an output folder that cannot be one."""
    if not out:
        raise ValueError(f"empty {flag}: give a folder (it is created if missing)")
    for parent in (Path(out), *Path(out).parents):
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"bad {flag} {out}: {parent} is a file, not a folder")
            break


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


def collate(trajs: list[Trajectory], vocab: Vocab) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded token ids (B, T) and the loss mask (B, T): True where the token is trained on."""
    width = max(len(t) for t in trajs)
    pad = vocab.id(PAD)
    tokens = torch.full((len(trajs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(trajs), width), dtype=torch.bool)
    for i, t in enumerate(trajs):
        tokens[i, : len(t)] = torch.tensor(vocab.ids(t.tokens))
        mask[i, : len(t)] = torch.tensor(t.loss_mask())
    return tokens, mask


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
    if dataset is not None:  # stored trajectories: a seeded draw with replacement
        trajs = [dataset[rng.randrange(len(dataset))] for _ in range(cfg.batch_size)][mine]
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


def train(cfg: TrainConfig) -> Path:
    """Run (or resume) training; returns the checkpoint folder."""
    return fit(cfg)[0]


def fit(cfg: TrainConfig) -> tuple[Path, SequenceModel]:
    """Run (or resume) training; returns the checkpoint folder and the trained model (every rank's)."""
    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rank, world, ddp_device = init_distributed(cfg.device)
    if cfg.batch_size % world:
        raise ValueError(f"bad batch_size={cfg.batch_size}: the global batch must split evenly over {world} ranks")
    device = ddp_device or resolve_device(cfg.device)
    task = get_task(cfg.task)
    text_task = bool(cfg.init_from) and task.adopt_tokenizer(cfg.init_from)  # the checkpoint's pieces
    dataset = task.load_data(cfg.data) if cfg.data else None  # may load the task's tokenizer
    vocab = mixed_vocab(task, parse_mix(cfg))
    if cfg.init_from:
        arch, model_kwargs, _ = read_hf_config(cfg.init_from)
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
            model, _, _, new, _ = load_hf_remapped(cfg.init_from, vocab.tokens)
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
    if lead:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))

    def save(step: int) -> Path:
        return save_checkpoint(
            out, model, arch=arch, model_kwargs=model_kwargs, vocab=vocab, task=cfg.task,
            step=step, train_config=asdict(cfg), optimizer=opt, task_format=task_format(task),
            extra_files=task.assets(),
        )  # fmt: skip

    log = (out / "log.jsonl").open("a") if lead else None
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
                log.write(json.dumps(rec) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{rec['loss']:.4f}")
            if lead and ((step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps):
                ckpt = save(step + 1)
            # every rank decides from the same all-reduced flags, so all stop at the same step
            if step + 1 < cfg.steps:  # after the last step there is nothing left to stop
                why = stop.poll() if world == 1 else (0 if not totals[2] else 2 if totals[2] > world else 1)
            if why:
                if lead and (step + 1) % cfg.save_every:
                    ckpt = save(step + 1)
                break
    bar.close()
    if log is not None:
        log.close()
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
