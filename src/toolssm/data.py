"""Trajectory datasets: ``toolssm data`` writes a task's expert trajectories as a file; ``train --data`` reads one.

One record per trajectory (`Trajectory.to_record`), one JSON object per line (``.jsonl``, or ``.parquet`` through
Hugging Face ``datasets`` when it is installed)::

    {"task": "addition", "size": 3, "problem": "123+45", "tokens": ["[BOS]", "1", ...], "roles": ["input", ...]}

``problem`` is ``Task.format``'s text (``Task.parse`` reads it back), so a record can be replayed through the
task's tool (`Task.replay`) and its verdict checked; ``size`` is ``Task.size``. Any program may write such a
file: ``task`` and ``size`` are optional, ``tokens`` and ``roles`` are required.

The file is the online training stream, written down: record ``k`` is problem ``k % batch_size`` of step
``k // batch_size``'s batch, drawn exactly as `toolssm.train.make_batch` draws it (``random.Random(f"{seed}:{step}")``,
``Task.sample(rng, size)``). Training reads a dataset file in order (`Ordered`: step ``s`` takes records
``s * batch_size ...`` onward, wrapping around at the end), so ``train --data FILE`` with the seed and batch size
the file was written with trains on the same batches as online generation: the same loss curve, to the bit.
A file written by another program is read the same way; shuffle it first for another order.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from toolssm.protocol import Trajectory
from toolssm.tasks import Task


class Ordered(list):
    """Stored trajectories that training reads in order (`toolssm.train.make_batch`), not by a seeded draw."""


def stream(task: Task, size: int, n: int, *, seed: int = 0, batch_size: int = 32):
    """The first ``n`` (problem, trajectory) pairs of the online training stream (see the module doc)."""
    step = 0
    while True:
        rng = random.Random(f"{seed}:{step}")
        for _ in range(batch_size):
            if n <= 0:
                return
            problem = task.sample(rng, size)
            yield problem, task.demonstrate(problem)
            n -= 1
        step += 1


def records(task: Task, size: int, n: int, *, seed: int = 0, batch_size: int = 32):
    for problem, traj in stream(task, size, n, seed=seed, batch_size=batch_size):
        yield {"task": task.name, "size": task.size(problem), **traj.to_record(task.format(problem))}


def write_dataset(path: str | Path, rows, *, progress: bool = False) -> Path:
    """Write records as JSONL, or as parquet (``.parquet``, through ``datasets``)."""
    from tqdm.auto import tqdm

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = tqdm(rows, disable=not progress, desc=f"write {path.name}", unit="traj")
    if path.suffix == ".parquet":
        datasets = _datasets()
        datasets.Dataset.from_list(list(rows)).to_parquet(str(path))
        return path
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    tmp.replace(path)
    return path


def _datasets():
    try:
        import datasets
    except ImportError:
        raise ValueError("parquet needs Hugging Face datasets: pip install 'toolssm[datasets]' (or use .jsonl)") \
            from None
    return datasets


def is_dataset_file(path: str | Path) -> bool:
    """Whether ``path`` holds trajectory records (this module's format) rather than a task's own data (e.g.
    codefix's mini-SWE-agent records): a parquet file, or a JSONL file whose first record has ``tokens``."""
    path = Path(path)
    if path.suffix == ".parquet":
        return True
    if not path.is_file():
        return False
    with path.open() as f:
        for line in f:
            if line.strip():
                try:
                    first = json.loads(line)
                except json.JSONDecodeError:
                    return False
                return isinstance(first, dict) and "tokens" in first and "messages" not in first
    return False


def _rows(path: Path) -> list[tuple[str, Any]]:
    if path.suffix == ".parquet":
        try:
            table = _datasets().Dataset.from_parquet(str(path))
        except Exception as e:  # noqa: BLE001 - pyarrow's many error types: an unreadable file
            raise ValueError(f"{path}: not a readable parquet file ({type(e).__name__})") from None
        return [(f"{path}, row {i}", r) for i, r in enumerate(table)]
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((f"{path}, line {i}", json.loads(line)))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}, line {i}: not JSON ({e.msg})") from None
    return out


def read_dataset(path: str | Path, task: Task) -> Ordered:
    """The trajectories of a dataset file, in order, checked against ``task``: a one-line ValueError naming the
    line for a record that is not a trajectory, is another task's, or has a token outside the task's vocabulary."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no trajectories at {path}: {'not a file' if path.exists() else 'the path does not exist'}")
    vocab = task.vocab()
    out = Ordered()
    for where, rec in _rows(path):
        traj = Trajectory.from_record(rec, where)
        if rec.get("task") not in (None, task.name):
            raise ValueError(f"{where}: a {rec['task']} trajectory, but training is on {task.name} (--task)")
        unknown = next((t for t in traj.tokens if t not in vocab), None)
        if unknown is not None:
            raise ValueError(f"{where}: token {unknown!r} is not in task {task.name}'s vocabulary")
        if not any(traj.loss_mask()[1:]):
            raise ValueError(f"{where}: no token to train on (no thought, command or output after the first)")
        out.append(traj)
    if not out:
        raise ValueError(f"no trajectories in {path}")
    return out


def load_stored(task: Task, path: str | Path) -> list[Trajectory]:
    """The stored trajectories ``train --data PATH`` trains on (and ``analyze --data PATH`` analyses): a dataset
    file's, in order (`Ordered`), else the task's own format (`Task.load_data`: code fixing's JSONL, tokenized
    with the ``tokenizer.json`` beside it, which the task keeps)."""
    return read_dataset(path, task) if is_dataset_file(path) else task.load_data(path)


def stored_batch(dataset: list[Trajectory], step: int, batch_size: int, seed: int) -> list[Trajectory]:
    """The global batch of step ``step`` drawn from stored trajectories: a dataset file's next ``batch_size``
    records (wrapping around), other stored trajectories by a draw with replacement seeded by (seed, step)."""
    if isinstance(dataset, Ordered):
        return [dataset[(step * batch_size + i) % len(dataset)] for i in range(batch_size)]
    rng = random.Random(f"{seed}:{step}")  # a string seed is hashed deterministically
    return [dataset[rng.randrange(len(dataset))] for _ in range(batch_size)]
