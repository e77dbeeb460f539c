"""Flat memory and flat per-token cost of the tool-in-the-loop rollout.

    python bench/rollout_memory.py --checkpoint runs/demo --digits 100 1000 --batch 20

Each size runs in a fresh child process (peak RSS is a per-process high-water mark), one after another,
in this one run. The child builds its problems and episodes, then decodes them in one batch with the
tool in the loop, and reports its peak RSS and the wall time per decode step. The parent prints the
table and the ratios against the first size.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch


def child(args) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from common import load_or_exit
    from toolssm.rollout import rollout
    from toolssm.tasks import get_task

    torch.set_num_threads(1)
    loaded = load_or_exit(args.checkpoint)
    task = get_task(loaded.task)
    digits = args.digits[0]
    rng = random.Random(f"bench:{digits}")
    problems = [task.sample_eval(rng, str(digits)) for _ in range(args.batch)]
    episodes = [task.episode(p, max_tokens=task.token_budget(p)) for p in problems]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    results = rollout(loaded.model, loaded.vocab, episodes)
    dt = time.perf_counter() - t0
    steps = max(r.n_tokens for r in results)  # the batch decodes in lock-step
    print(json.dumps({
        "digits": digits,
        "correct": sum(task.verify(p, ep).correct for p, ep in zip(problems, episodes)),
        "steps": steps,
        "us_per_step": 1e6 * dt / steps,
        "rss_before_mb": rss_before / 1024,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="runs/demo")
    ap.add_argument("--digits", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    rows = []
    for d in args.digits:
        cmd = [sys.executable, __file__, "--child", "--checkpoint", args.checkpoint, "--digits", str(d),
               "--batch", str(args.batch)]  # fmt: skip
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    base = rows[0]
    print(f"batched rollout, batch {args.batch}, checkpoint {args.checkpoint}")
    print(f"{'digits':>7} | {'correct':>7} | {'decode steps':>12} | {'us/step':>8} | {'peak RSS MB':>11} |"
          f" {'RSS ratio':>9} | {'us/step ratio':>13}")  # fmt: skip
    for r in rows:
        print(f"{r['digits']:>7} | {r['correct']:>4}/{args.batch:<2} | {r['steps']:>12,} | {r['us_per_step']:>8.1f} |"
              f" {r['peak_rss_mb']:>11.1f} | {r['peak_rss_mb'] / base['peak_rss_mb']:>9.3f} |"
              f" {r['us_per_step'] / base['us_per_step']:>13.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
