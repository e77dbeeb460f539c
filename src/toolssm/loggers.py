"""Where training metrics go: ``log.jsonl`` always, TensorBoard and Weights & Biases on request.

A row is a flat dict with a ``step``. The JSONL file gets it exactly as given, one JSON object a line, so a
run without extra loggers writes the same log as before they existed. TensorBoard and W&B get the row's
numeric fields as scalars; an evaluation row (one with ``eval_size``) is written under ``eval/<size>/<metric>``
so each size gets its own curve. Both are optional extras (``pip install -e ".[tensorboard]"`` or
``".[wandb]"``), imported only when asked for; asking for one that is not installed is a one-line error
before training starts.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

LOGGERS = ("jsonl", "tensorboard", "wandb")
_NEEDS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}  # logger: (module, extra)


def check_loggers(names: tuple[str, ...]) -> None:
    """A one-line error for an unknown logger or one whose package is not installed."""
    for name in names:
        if name not in LOGGERS:
            raise ValueError(f"bad logger {name!r}: choose from {', '.join(LOGGERS)}")
        if name in _NEEDS and importlib.util.find_spec(_NEEDS[name][0]) is None:
            module, extra = _NEEDS[name]
            raise ValueError(f"logger {name} needs the {module} package: pip install -e \".[{extra}]\"")


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """The row's numeric fields as scalar tags; an evaluation row's go under ``eval/<size>/``."""
    prefix = f"eval/{row['eval_size']}/" if "eval_size" in row else "train/"
    return {prefix + k: float(v) for k, v in row.items()
            if k not in ("step", "eval_size") and isinstance(v, (int, float)) and not isinstance(v, bool)}  # fmt: skip


class MetricsLogger:
    """Fan one row out to every chosen logger. ``append``: continue an existing log.jsonl (a resumed run)."""

    def __init__(self, out: Path, names: tuple[str, ...] = ("jsonl",), *, config: dict | None = None):
        check_loggers(names)
        self.jsonl = (out / "log.jsonl").open("a")
        self.tb = self.wandb = None
        if "tensorboard" in names:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(out / "tensorboard"))
        if "wandb" in names:
            import wandb

            self.wandb = wandb.init(project="toolssm", name=out.name, dir=str(out), config=config or {},
                                    resume="allow")  # fmt: skip

    def log(self, row: dict[str, Any]) -> None:
        self.jsonl.write(json.dumps(row) + "\n")
        self.jsonl.flush()
        if self.tb is not None:
            for tag, v in scalars(row).items():
                self.tb.add_scalar(tag, v, row["step"])
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(scalars(row), step=row["step"])

    def close(self) -> None:
        self.jsonl.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a log.jsonl, with a one-line error naming the file and line of a bad one."""
    rows = []
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{i}: not JSON ({e.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            raise ValueError(f"{path}:{i}: a log row is a JSON object with an integer step")
        rows.append(row)
    return rows
