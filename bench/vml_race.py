"""oneMKL's first-call race (pytorch/pytorch#188792), and `toolssm.runtime.resolve_vector_math`, side by side.

    python bench/vml_race.py --runs 120
    python bench/vml_race.py --runs 40 --threads 16 --load 0

Each run is a fresh process, as the race happens only at a function's first call. It starts torch's threads with
a matrix product, then computes the ``exp`` of a Mamba block's first scan step (batch 4, 8 steps of 8 channels x 16
states: 4,096 floats, two of ATen's 2,048-element chunks) on ``--threads`` threads, and compares it bit for bit
with the same ``exp`` on one thread. Runs alternate: "cold" leaves oneMKL to choose its kernel at that first call,
"resolved" calls `resolve_vector_math` first, as importing `toolssm.models` does. The race needs the threads to
be out of step, so by default a busy process holds one core throughout (``--load``), as another job does on a
shared 2-core machine. Prints, for each, how many runs were wrong and the largest error seen.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

CHILD = """
import sys, torch
threads, resolve = int(sys.argv[1]), sys.argv[2] == "1"
torch.set_num_threads(threads)
a = torch.randn(300, 300); (a @ a).sum()  # torch's (and MKL's) threads are up
if resolve:
    from toolssm.runtime import resolve_vector_math
    resolve_vector_math()
g = torch.Generator().manual_seed(0)
dt = torch.randn(4, 8, 8, generator=g).sigmoid()
A = -torch.rand(8, 16, generator=g) - 0.5
z = dt[..., None] * A  # (4, 8, 8, 16)
y = torch.exp(z)  # the first vector-math call, on `threads` threads
torch.set_num_threads(1)
ref = torch.exp(z)
print(int(torch.equal(y, ref)), (y - ref).abs().max().item())
"""

BUSY = "import time\nt = time.time()\nwhile time.time() - t < {s}: pass"


def one(threads: int, resolve: bool) -> tuple[bool, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(int(resolve))], capture_output=True,
                         text=True, check=True).stdout.split()  # fmt: skip
    return out[0] == "1", float(out[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=120, help="runs of each kind")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the first call")
    ap.add_argument("--load", type=int, default=1, help="busy processes beside the runs")
    args = ap.parse_args()
    busy = [subprocess.Popen([sys.executable, "-c", BUSY.format(s=10**6)]) for _ in range(args.load)]
    stats = {False: [0, 0.0], True: [0, 0.0]}  # resolve -> [wrong runs, largest error]
    t0 = time.time()
    try:
        for i in range(args.runs):
            for resolve in (False, True):
                ok, err = one(args.threads, resolve)
                stats[resolve][0] += not ok
                stats[resolve][1] = max(stats[resolve][1], err)
            if (i + 1) % 20 == 0:
                print(f"  {i + 1}/{args.runs} pairs, {time.time() - t0:.0f} s", file=sys.stderr)
    finally:
        for p in busy:
            p.kill()
    print(f"first exp on {args.threads} threads, {args.load} busy process(es), {args.runs} fresh processes each")
    print(f"{'':<24}{'wrong runs':>12}{'largest error':>15}")
    for resolve, name in ((False, "cold (oneMKL chooses)"), (True, "resolve_vector_math")):
        bad, err = stats[resolve]
        print(f"{name:<24}{f'{bad} ({100 * bad / args.runs:.1f}%)':>12}{err:>15.1e}")


if __name__ == "__main__":
    main()
