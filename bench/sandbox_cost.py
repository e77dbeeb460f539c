"""The cost of one sandboxed command (``true``) before and after the sandbox hardening, side by side.

    python bench/sandbox_cost.py --runs 50 --before e199f96

"before": ``tools/shell.py`` as it was at the git revision ``--before`` (loaded from git into a module of its
own); "after": the working tree's. Both run ``true`` in one sandbox each, alternating, after a few warm-up
runs; the report is the median (and the quartiles) of the wall time of ``ShellSandbox.run``, their ratio,
the load average, the CPU count and which limits are in force. The setup cost of an episode (``reset``:
the workspace mount and the cgroup) is measured the same way, apart.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from toolssm.tools import shell as after

ROOT = Path(__file__).resolve().parents[1]


def load_before(rev: str):
    """tools/shell.py at ``rev``, as a module named ``shell_before``."""
    src = subprocess.run(
        ["git", "show", f"{rev}:src/toolssm/tools/shell.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="toolssm-bench-")) / "shell_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("shell_before", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["shell_before"] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(xs, n=4)
    return q[0], statistics.median(xs), q[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=50, help="timed runs of `true` per version")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--before", default="e199f96", help="git revision of the 'before' shell.py")
    args = ap.parse_args()
    if (problem := after.sandbox_error()) is not None:
        sys.exit(f"no sandbox here: {problem}")
    before = load_before(args.before)
    versions = {"before": before, "after": after}
    boxes = {name: m.ShellSandbox({"main.py": "print(1)\n"}) for name, m in versions.items()}
    run_ms: dict[str, list[float]] = {name: [] for name in versions}
    reset_ms: dict[str, list[float]] = {name: [] for name in versions}
    load0 = os.getloadavg()
    try:
        for i in range(args.warmup + args.runs):
            for name, box in boxes.items():  # alternate, so load drifts hit both alike
                t0 = time.perf_counter()
                r = box.run("true")
                dt = 1e3 * (time.perf_counter() - t0)
                assert r.returncode == 0, r.observation()
                t0 = time.perf_counter()
                box.reset({"main.py": "print(1)\n"})
                dr = 1e3 * (time.perf_counter() - t0)
                if i >= args.warmup:
                    run_ms[name].append(dt)
                    reset_ms[name].append(dr)
    finally:
        for box in boxes.values():
            box.close()
    load1 = os.getloadavg()
    have, miss = after.limits_in_force()
    print(f"machine: {os.cpu_count()} CPUs, load average {load0[0]:.2f} before, {load1[0]:.2f} after the runs; "
          f"uid {os.geteuid()}; {args.runs} runs each, alternating, after {args.warmup} warm-up")
    print(f"limits in force (after): {', '.join(have)}" + (f"; missing: {'; '.join(miss)}" if miss else ""))
    print(f"{'':16}{'q1 ms':>9}{'median ms':>11}{'q3 ms':>9}")
    for what, table in (("run('true')", run_ms), ("reset()", reset_ms)):
        for name in versions:
            q1, med, q3 = quartiles(table[name])
            print(f"{what + ' ' + name:16}{q1:9.1f}{med:11.1f}{q3:9.1f}")
        ratio = statistics.median(table["after"]) / statistics.median(table["before"])
        print(f"{what} after/before: {ratio:.2f}x (median)")


if __name__ == "__main__":
    main()
