"""``toolssm collect``: run a task's expert into stored trajectories, for ``toolssm train --data``.

For a task whose expert is too slow to run at every training step (code fixing drives a sandboxed shell),
trajectories are collected once and trained on from the file. What is written is the task's own
(`Task.make_data`); for code fixing: the agent's verified episodes as mini-SWE-agent JSONL and a BPE
tokenizer beside them::

    toolssm collect --task codefix --out runs/codefix/data/interactive.jsonl --count 300
    toolssm collect --task codefix-single --out runs/codefix/data/single-turn.jsonl --count 300
    toolssm collect --tokenizer-only --out runs/codefix/data   # retrain tokenizer.json on every *.jsonl there

The second collection into the same folder keeps the first one's tokenizer, so both tasks share it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from toolssm.tasks import get_task


@dataclass
class CollectConfig:
    """Run a task's expert into stored trajectories (code fixing: its agent in the sandbox) for train --data."""

    task: str = "codefix"
    """a task trained from stored trajectories (codefix, codefix-single)"""
    out: str = "runs/codefix/data/interactive.jsonl"
    """the trajectory file to write (its folder gets the tokenizer); with --tokenizer-only, the data folder"""
    count: int = 300
    """episodes to run (those that fail the verifier are left out)"""
    max_size: int = 16
    """the largest problem (codefix: functions; the smallest is 4)"""
    seed: int = 0
    """seed of the problems drawn"""
    tokenizer_only: bool = False
    """only (re)train the BPE tokenizer on every record of the folder's *.jsonl files (e.g. after adding
    trajectories distilled from an LLM agent)"""
    vocab_size: int = 1024
    """BPE pieces, with --tokenizer-only"""


def run_collect(cfg: CollectConfig) -> int:
    if cfg.tokenizer_only:
        from toolssm.tasks.codefix.trajectory import read_records, texts
        from toolssm.tokenizer import Bpe

        files = sorted(Path(cfg.out).glob("*.jsonl"))
        if not files:
            raise ValueError(f"no *.jsonl trajectory files in {cfg.out} to train a tokenizer on")
        records = [r for p in files for r in read_records(p)]
        print(f"tokenizer on {len(records)} records -> {Bpe.train(texts(records), cfg.vocab_size).save(cfg.out)}")
        return 0
    task = get_task(cfg.task)
    if cfg.count < 1:
        raise ValueError(f"bad --count {cfg.count}: must be positive")
    if Path(cfg.out).is_dir():
        raise ValueError(f"bad --out {cfg.out}: a folder; give the trajectory file to write, e.g. {cfg.out}/{cfg.task}.jsonl")
    t0 = time.perf_counter()
    task.make_data(cfg.out, count=cfg.count, max_size=cfg.max_size, seed=cfg.seed)
    print(f"collected in {time.perf_counter() - t0:.0f}s; train with: toolssm train --task {cfg.task} --data {cfg.out} "
          f"--train-size {cfg.max_size}")  # fmt: skip
    return 0
