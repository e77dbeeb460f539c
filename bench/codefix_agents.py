"""Both hard-coded code-fixing agents on every codebase size from 4 to 64 (several seeds each), in the real
sandbox: the fraction fixed (and fixed without touching anything else), commands and time per episode.

    python bench/codefix_agents.py --seeds 2
"""

from __future__ import annotations

import argparse
import random
import time

from toolssm.tasks.codefix.codebase import generate
from toolssm.tasks.codefix.trajectory import run_agent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs=2, default=(4, 64))
    ap.add_argument("--seeds", type=int, default=1)
    args = ap.parse_args()
    for agent in ("single-turn", "interactive"):
        t0 = time.perf_counter()
        total = fixed = clean = turns = 0
        failures = []
        for n in range(args.sizes[0], args.sizes[1] + 1):
            for s in range(args.seeds):
                rec = run_agent(generate(random.Random(f"bench:{n}:{s}"), n), agent)
                info = rec["info"]["codefix"]
                total += 1
                fixed += info["fixed"]
                clean += info["clean"]
                turns += sum(m["role"] == "assistant" for m in rec["messages"])
                if not info["fixed"]:
                    failures.append((n, s))
        dt = time.perf_counter() - t0
        print(
            f"{agent:>12}: fixed {fixed}/{total}, clean {clean}/{total}, {turns / total:.1f} commands and"
            f" {dt / total:.2f} s per episode; failures: {failures or 'none'}"
        )


if __name__ == "__main__":
    main()
