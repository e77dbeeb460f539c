"""Beyond the paper: is the demo checkpoint exact on 10,000-digit additions? (The paper stopped at 1,000.)

    python bench/long_addition.py --checkpoint runs/demo --digits 10000 --n 5

Prints answer and whole-trajectory exact match, tokens per problem, and decode throughput.
"""

from __future__ import annotations

import argparse
import time

import torch

from common import load_or_exit
from toolssm.evaluate import evaluate_size
from toolssm.tasks import get_task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="runs/demo")
    ap.add_argument("--digits", type=int, nargs="+", default=[10_000])
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_or_exit(args.checkpoint)
    task = get_task(loaded.task)
    print(f"{loaded.arch} from {loaded.path} (step {loaded.step})")
    print(f"{'digits':>8} | {'answer EM':>9} | {'traj. EM':>8} | {'tokens/problem':>14} | {'decode tok/s':>12} | time")
    for d in args.digits:
        t0 = time.perf_counter()
        r = evaluate_size(loaded.model, task, loaded.vocab, str(d), n_problems=args.n, seed=args.seed,
                          batch_size=args.n, with_token_acc=False, progress=True)  # fmt: skip
        dt = time.perf_counter() - t0
        print(f"{d:>8} | {r.answer_acc:>9.0%} | {r.trajectory_acc:>8.0%} | {r.tokens_per_problem:>14,.0f} |"
              f" {r.tokens_per_problem * r.n / dt:>12,.0f} | {dt:.0f}s  ({r.n} problems)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
