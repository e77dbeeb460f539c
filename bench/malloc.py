"""The allocator setting (`toolssm.runtime.keep_freed_memory`): training time, kernel time, page faults and peak
memory, with it and with glibc's own policy, side by side.

    python bench/malloc.py --steps 100 --repeats 2
    python bench/malloc.py --task addition --model mamba --batch-size 256 --train-size 5

Runs `toolssm train` as child processes, alternating ``TOOLSSM_MALLOC=system`` (glibc's policy) and the default
(freed memory kept), so both see the same machine. Per run: the training loop's time between its first and last
log line (start-up and the first steps excluded), and from the kernel (``os.wait4``) user and system CPU time,
minor page faults and peak resident memory. Prints the medians and the kept / system ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def one_run(args, system: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TOOLSSM_MALLOC"}
    if system:
        env["TOOLSSM_MALLOC"] = "system"
    with tempfile.TemporaryDirectory() as out:
        argv = [sys.executable, "-m", "toolssm.cli", "train", "--task", args.task, "--model", args.model,
                "--train-size", str(args.train_size), "--steps", str(args.steps), "--batch-size", str(args.batch_size),
                "--threads", "1", "--log-every", "10", "--save-every", str(10 * args.steps), "--no-progress",
                "--out", out]  # fmt: skip
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
        _, status, ru = os.wait4(proc.pid, 0)
        if status:
            sys.exit(f"toolssm train failed ({status}): {' '.join(argv)}")
        log = [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines() if line.startswith("{")]
    steps = [r for r in log if "elapsed_s" in r]
    loop = (steps[-1]["elapsed_s"] - steps[0]["elapsed_s"]) / (steps[-1]["step"] - steps[0]["step"])
    return {"s/step": loop, "user s": ru.ru_utime, "system s": ru.ru_stime, "minor faults": ru.ru_minflt,
            "peak MB": ru.ru_maxrss / 1024}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="hanoi")
    ap.add_argument("--model", default="lstm")
    ap.add_argument("--train-size", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {"system": [], "kept": []}
    for _ in range(args.repeats):
        for name in runs:
            runs[name].append(one_run(args, system=name == "system"))
            print(f"  {name:>6}: " + ", ".join(f"{k} {v:,.3f}" for k, v in runs[name][-1].items()), flush=True)
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    print(f"\n{args.task}, {args.model}, batch {args.batch_size}, {args.steps} steps, medians of {args.repeats}:")
    print(f"{'':>14} | {'system':>12} | {'kept':>12} | kept / system")
    for k in med["system"]:
        a, b = med["system"][k], med["kept"][k]
        print(f"{k:>14} | {a:>12,.3f} | {b:>12,.3f} | {b / a if a else float('nan'):.2f}")


if __name__ == "__main__":
    main()
