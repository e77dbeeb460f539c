"""Shared helpers for the benchmarks: find a checkpoint, or say how to make one."""

from __future__ import annotations

import sys

from toolssm.checkpoint import CheckpointError, load_checkpoint


def load_or_exit(path: str):
    try:
        return load_checkpoint(path)
    except CheckpointError as e:
        sys.exit(f"{e}\nTrain one first: toolssm demo  (writes runs/demo)")
