"""Checkpoints: a folder with safetensors weights, a JSON config, and the optimizer/trainer state.

    <run>/checkpoint/model.safetensors   the weights
    <run>/checkpoint/config.json         task, vocabulary, resolved model kwargs, train config, step, provenance
                                         (toolssm and torch versions, git commit, seed: toolssm.provenance)
    <run>/checkpoint/train_state.pt      optimizer state and step (torch.save, loaded weights_only)

A save is written to ``checkpoint.tmp`` and swapped in with renames, so a stop at any moment leaves a
whole checkpoint behind: the new one, or the previous one as ``checkpoint.prev``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from toolssm.models import SequenceModel, build_model
from toolssm.protocol import Vocab
from toolssm.provenance import provenance
from toolssm.tasks import Task, get_task

FORMAT_VERSION = 1


class CheckpointError(Exception):
    """A checkpoint is missing or unreadable. The message is one line, fit for a CLI error."""


@dataclass
class Loaded:
    model: SequenceModel
    vocab: Vocab
    config: dict[str, Any]
    path: Path

    @property
    def task(self) -> str:
        return self.config["task"]

    @property
    def arch(self) -> str:
        return self.config["arch"]

    @property
    def step(self) -> int:
        return self.config["step"]


def save_checkpoint(
    run_dir: str | Path,
    model: SequenceModel,
    *,
    arch: str,
    model_kwargs: dict[str, Any],
    vocab: Vocab,
    task: str,
    step: int,
    train_config: dict[str, Any] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    task_format: dict[str, Any] | None = None,
    extra_files: dict[str, str] | None = None,
) -> Path:
    run_dir = Path(run_dir)
    final, tmp, prev = run_dir / "checkpoint", run_dir / "checkpoint.tmp", run_dir / "checkpoint.prev"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    raw = model.module if hasattr(model, "module") else model  # unwrap DDP
    save_file({k: v.detach().contiguous().cpu() for k, v in raw.state_dict().items()}, tmp / "model.safetensors")
    config = {
        "format": FORMAT_VERSION,
        "task": task,
        "arch": arch,
        "model": model_kwargs,
        "vocab": vocab.tokens,
        "step": step,
        "train": train_config or {},
        "task_format": task_format or {},
        "provenance": provenance(seed=(train_config or {}).get("seed")),
    }
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    for name, text in (extra_files or {}).items():  # task assets, e.g. a BPE tokenizer.json
        (tmp / name).write_text(text)
    if optimizer is not None:
        torch.save({"optimizer": optimizer.state_dict(), "step": step}, tmp / "train_state.pt")
    # at every moment a whole checkpoint is in final or prev: prev goes only once final (newer) exists
    if final.exists():
        shutil.rmtree(prev, ignore_errors=True)
        final.rename(prev)
    tmp.rename(final)
    shutil.rmtree(prev, ignore_errors=True)
    return final


def find_checkpoint(path: str | Path) -> Path:
    """Accept a checkpoint folder or a run folder holding one."""
    path = Path(path)
    for cand in (path, path / "checkpoint", path / "checkpoint.prev"):
        if (cand / "config.json").is_file():
            return cand
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: the path does not exist")
    raise CheckpointError(f"no checkpoint at {path}: expected config.json and model.safetensors in it")


def read_config(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """The checkpoint folder (as `find_checkpoint`) and its config.json, without loading any weights."""
    ckpt = find_checkpoint(path)
    try:
        config = json.loads((ckpt / "config.json").read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        why = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else f"{type(e).__name__}: {e}"
        raise CheckpointError(f"corrupt checkpoint {ckpt}: bad {ckpt / 'config.json'} ({why})") from None
    except OSError as e:
        raise CheckpointError(f"unreadable checkpoint {ckpt}: {ckpt / 'config.json'}: {e.strerror}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"corrupt checkpoint {ckpt}: bad config.json (not an object)")
    version = config.get("format", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {ckpt} has format {version!r}; this toolssm reads format {FORMAT_VERSION} "
                              f"(written by another version of toolssm?)")  # fmt: skip
    kinds = {"task": str, "arch": str, "vocab": list, "model": dict, "step": int}
    bad = [k for k, kind in kinds.items() if not isinstance(config.get(k), kind) or isinstance(config.get(k), bool)]
    if bad:
        raise CheckpointError(f"corrupt checkpoint {ckpt}: bad config.json (missing or malformed: {', '.join(bad)})")
    return ckpt, config


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Loaded:
    ckpt, config = read_config(path)
    try:
        vocab = Vocab(config["vocab"])
        model = build_model(config["arch"], len(vocab), config["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # RuntimeError: impossible sizes
        raise CheckpointError(f"corrupt checkpoint {ckpt}: bad config.json ({type(e).__name__}: {e})") from None
    try:
        state = load_file(ckpt / "model.safetensors")
        model.load_state_dict(state)
    except FileNotFoundError:
        raise CheckpointError(f"corrupt checkpoint {ckpt}: model.safetensors is missing") from None
    except (SafetensorError, RuntimeError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"corrupt checkpoint {ckpt}: unreadable weights ({first})") from None
    return Loaded(model.to(device).eval(), vocab, config, ckpt)


def task_format(task) -> dict[str, Any]:
    """What a checkpoint must agree on with the task to decode it: how the model's context is laid out."""
    return {"input_in_context": task.input_in_context}


def check_task_format(loaded: Loaded, task) -> None:
    """Refuse a checkpoint trained on another trajectory layout than the task now has (it would decode
    garbage). Checkpoints from before the field existed had the input in context."""
    saved = {"input_in_context": True, **loaded.config.get("task_format", {})}
    if saved != task_format(task):
        raise CheckpointError(
            f"checkpoint {loaded.path} was trained with task format {saved}, but task {task.name} now uses "
            f"{task_format(task)}: retrain it"
        )


def check_vocab(loaded: Loaded, task) -> None:
    """Refuse a checkpoint whose vocabulary lacks tokens its task writes (a config.json naming another task
    than the one it was trained on): decoding would fail on the first such token."""
    try:
        wanted = task.vocab().tokens
    except ValueError:  # a text task without its tokenizer: the task itself says so when it is used
        return
    missing = [t for t in wanted if t not in loaded.vocab]
    if missing:
        shown = ", ".join(repr(t) for t in missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise CheckpointError(f"checkpoint {loaded.path} does not fit task {task.name}: its vocabulary lacks {shown} "
                              f"(config.json names another task than the one it was trained on?)")  # fmt: skip


def check_finite(loaded: Loaded) -> None:
    """Refuse a checkpoint with NaN or infinite weights (a diverged training): it decodes nothing useful."""
    bad = [(name, int((~torch.isfinite(p)).sum())) for name, p in loaded.model.state_dict().items()
           if p.is_floating_point() and not bool(torch.isfinite(p).all())]  # fmt: skip
    if bad:
        total = sum(n for _, n in bad)
        raise CheckpointError(f"checkpoint {loaded.path} has {total:,} NaN or infinite weights (in {len(bad)} tensors, "
                              f"e.g. {bad[0][0]}): its training diverged; retrain, e.g. with a lower --lr")  # fmt: skip
def load_trained(path: str | Path, device: str | torch.device = "cpu") -> tuple[Loaded, Task]:
    """A trained model and the task it was trained on, ready to decode: the checkpoint (`load_checkpoint`), its
    task (plugins included) with the assets saved beside the weights (a BPE ``tokenizer.json``: `Task.load_assets`),
    and the check that the task still lays trajectories out as the checkpoint learned them (`check_task_format`).
    What ``eval``, ``solve``, sweeps and ``theory`` load."""
    loaded = load_checkpoint(path, device)
    task = get_task(loaded.task)
    task.load_assets(loaded.path)
    check_task_format(loaded, task)
    check_vocab(loaded, task)  # the task would write tokens the model has no id for
    return loaded, task


def load_train_state(ckpt: Path) -> dict[str, Any]:
    try:
        return torch.load(ckpt / "train_state.pt", map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"cannot resume from {ckpt}: train_state.pt is missing") from None
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise CheckpointError(f"corrupt checkpoint {ckpt}: unreadable train_state.pt ({type(e).__name__})") from None
