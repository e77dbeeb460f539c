"""Prediction against measurement, every task in one command (docs/analysis.md).

For each task: the analysis (`toolssm analyze`: the policy window k, the k-gram learner's predicted row, the
strict k-coverage), then the k-gram learner itself (`--model kgram --model.window k`, counted on the same
training problems) evaluated on the same test problems, beside the LSTM and Mamba rows recorded in docs/
(not retrained here). Wall times are per task, on whatever else the machine is running.

    PYTHONPATH=src nice python bench/analysis_table.py                 # every task
    PYTHONPATH=src nice python bench/analysis_table.py addition tm-add # some
    PYTHONPATH=src nice python bench/analysis_table.py --data-dir runs/codefix/data codefix codefix-single

Code fixing trains on stored trajectories (`toolssm collect`): its rows read them from ``--data-dir`` (default
runs/codefix/data: interactive.jsonl, single-turn.jsonl and their tokenizer.json), as ``analyze --data`` and
``train --data`` do; its test sizes run the agent in the sandbox (seconds per problem, so 10 per size).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from toolssm.analysis import analyze
from toolssm.data import load_stored
from toolssm.evaluate import LengthResult, evaluate
from toolssm.plots import paper_cell
from toolssm.models import ModelConfig
from toolssm.tasks import get_task
from toolssm.train import TrainConfig, fit

DISKS = r"\(\d+\)"

#: task: (train size, test sizes, counted steps of 32 problems, exchangeable-token regex for the analysis)
SETTINGS = {
    "addition": (5, ["10", "100", "1000"], 100, ""),
    "subtraction": (5, ["10", "100", "1000"], 100, ""),
    "multiplication-x1": (10, ["20", "100", "1000"], 100, ""),
    "multiplication-x2": (10, ["20", "100", "300"], 100, ""),
    "addition-direct": (5, ["6", "7", "10"], 100, ""),
    "addition-reversed": (5, ["6", "7", "10"], 100, ""),
    "addition-notool": (5, ["6", "7", "10"], 100, ""),
    "addition-calculator": (5, ["6", "7", "10"], 100, ""),
    "hanoi": (5, ["6", "7", "8"], 16, DISKS),
    "hanoi-fixed": (5, ["6", "7", "8"], 16, DISKS),
    "hanoi-paper": (5, ["6", "7", "8"], 16, DISKS),
    "hanoi-recursive": (7, ["8", "9", "10"], 8, DISKS),
    "logic-graph": (10, ["20", "100", "1000"], 30, r"v\d+"),  # node labels v0..v999, read as one class
    "tm-increment": (5, ["10", "100", "1000"], 30, ""),
    "tm-add": (5, ["10", "100", "1000"], 30, ""),
    "tm-palindrome": (5, ["10", "30", "100"], 30, ""),
    "tm-unary": (5, ["10", "100", "1000"], 30, ""),
    "oolong": (5, ["10", "25", "1000"], 100, ""),
    "codefix": (16, ["16", "32", "64"], 100, ""),  # 100 steps of 32 draws from the stored trajectories
    "codefix-single": (16, ["4", "8", "16"], 100, ""),
}
#: tasks trained on stored trajectories: the file under --data-dir
STORED = {"codefix": "interactive.jsonl", "codefix-single": "single-turn.jsonl"}
#: test problems per size (code fixing: the README's 10; the others 10 too)
N_PROBLEMS = 10

#: measured rows recorded in docs/ (cpu presets unless noted); "–": not recorded
RECORDED = {
    "addition": ("`5→1K (100%)`", "`5→1K (100%)`", "README, Figure 2"),
    "subtraction": ("–", "–", ""),
    "multiplication-x1": ("–", "`10→1K (100%)`", "README"),
    "multiplication-x2": ("`10→1K (100%)`", "`10→1K (100%)`", "docs/tasks/multiplication.md"),
    "addition-direct": ("–", "`5→5 (100%)`", "docs/tasks/addition-ablations.md"),
    "addition-reversed": ("–", "`5→5 (100%)`", "docs/tasks/addition-ablations.md"),
    "addition-notool": ("–", "`5→5 (55%)`", "docs/tasks/addition-ablations.md"),
    "addition-calculator": ("–", "`5→6 (45%)`", "docs/tasks/addition-ablations.md"),
    "hanoi": ("`5→9 (100%)`, 7 of 9 seeds", "–", "docs/tasks/hanoi.md"),
    "hanoi-fixed": ("`5→8 (15%)`", "–", "docs/tasks/hanoi.md"),
    "hanoi-paper": ("–", "–", ""),
    "hanoi-recursive": ("`7→12 (100%)`, 4 of 4 seeds", "–", "docs/tasks/hanoi.md"),
    "logic-graph": ("not learned (0% at 10)", "`10→1K (100%)`", "docs/tasks/logic_graph.md"),
    "codefix": ("`16→– (<5%)`: 10% at 4 and 12, 1,200 steps", "`16→64 (100%)`", "README, docs/tasks/codefix.md"),
    "codefix-single": ("0% at 4 to 64", "40% at 4 functions, 0% from 8", "README, docs/tasks/codefix.md"),
    "oolong": ("55%, 65%, 20%, 5% at 5, 10, 25, 1,000 examples", "100%, 60%, 40%, 5% at 5, 10, 25, 1,000 examples",
               "README, docs/tasks/oolong.md"),
}


def row(task_name: str, n_problems: int = N_PROBLEMS, data_dir: str = "runs/codefix/data") -> tuple[str, dict]:
    train_size, sizes, steps, same = SETTINGS[task_name]
    task = get_task(task_name)
    data = str(Path(data_dir) / STORED[task_name]) if task_name in STORED else ""
    if data and not Path(data).is_file():
        why = f"not run: no stored trajectories at {data} (`toolssm collect --task {task_name} --out {data}`)"
        return f"| `{task_name}` | {why} | | | | {' | '.join(RECORDED[task_name][:2])} | | |", {}
    stored = load_stored(task, data) if data else None  # and the tokenizer beside them, as train --data does
    t0 = time.perf_counter()
    a = analyze(task, train_size, sizes, steps=steps, n_problems=n_problems, exchangeable=same, by_train_size=False,
                data=stored)  # fmt: skip
    t_analysis = time.perf_counter() - t0
    pred = [LengthResult(r.spec, r.size, r.n, r.exact, r.exact, None, 0, r.tokens_per_problem, r.seconds) for r in a.sizes]
    strict = " ".join(f"{r.k_covered:.0%}" if r.k_checked else "–" for r in a.sizes)
    lstm, mamba, _ = RECORDED.get(task_name, ("–", "–", ""))
    note = f" ({'disks' if same == DISKS else 'labels'} exchangeable)" if same else ""
    note += f" ({len(stored)} stored)" if stored else ""
    head = f"| `{task_name}` | {a.policy_window or '>' + str(a.k)} | `{paper_cell(train_size, pred)}`{note} | {strict} | "
    tail = f" | {lstm} | {mamba} | {t_analysis:.0f} s |"
    t1 = time.perf_counter()  # no window up to max_k: the learner is counted at k = max_k (64)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(task=task_name, train_size=train_size, model=ModelConfig(arch="kgram", window=a.k),
                          steps=steps, batch_size=32, out=tmp, progress=False, data=data)  # fmt: skip
        _, model = fit(cfg)
    t_count = time.perf_counter() - t1
    t2 = time.perf_counter()
    measured = evaluate(model, task, task.vocab(), sizes, n_problems=n_problems, with_token_acc=False, progress=False)
    t_eval = time.perf_counter() - t2
    line = head + f"`{paper_cell(train_size, measured)}`" + tail + f" {t_count:.0f} + {t_eval:.0f} s |"
    return line, {"task": task_name, "k": a.k, "first_unseen": [str(r.first_unseen and r.first_unseen.describe()) for r in a.sizes]}


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    data_dir, names = "runs/codefix/data", list(argv)
    if "--data-dir" in names:
        i = names.index("--data-dir")
        data_dir = names[i + 1]
        del names[i : i + 2]
    print("| task | k | predicted (k-gram) | k-covered at the 3 sizes | k-gram measured | LSTM (docs) | Mamba (docs) "
          "| analysis | k-gram count + eval |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in names or list(SETTINGS):
        try:
            line, info = row(name, data_dir=data_dir)
        except Exception as e:  # noqa: BLE001 - one task's failure is a row, not the end of the table
            line, info = f"| `{name}` | failed: {type(e).__name__}: {str(e)[:80]} |", {}
        print(line, flush=True)
        if info:
            print(f"<!-- {info} -->", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
