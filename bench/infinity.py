"""To infinity: a trained checkpoint of a pointer task (the demo: addition, trained on <= 5 digits; or an n x 2
multiplication) on problems of 10^4 to 10^6 digits, decoded by the compiled engine (toolssm.engine) with the
pointer tool in the loop.

    python bench/infinity.py                                  # the demo checkpoint, the default cases below
    python bench/infinity.py --cases random:10000:0 carry:1000000
    python bench/infinity.py --checkpoint runs/demo runs/mult --cases random:10000:0 carry:10000
                                                              # every case on each checkpoint in turn

A case is KIND:DIGITS[:SEED] (DIGITS: the first operand's; a multiplication's second has the task's own):
    random   uniform operands, drawn with SEED (task.sample_eval with DIGITS as the size)
    carry    the longest carry chain: 999...9 + 1 (addition: one carry through every digit, the answer one
             digit longer); 999...9 * 99 (multiplication: the largest carry at every digit)
    run      one long run of a single digit with no carry at all: 444...4 + 555...5; 444...4 * 2

Each case runs in its own process, one after another (so its peak RSS is its own; ``ru_maxrss``), with one
torch thread. It reports: exact or not (and, if not, the first wrong digit counted from the least significant,
digit 0), tokens fed to the model, wall and CPU seconds, tokens/s, the tool memory's bytes, peak RSS. The
machine state (load average) is printed with each line: the CPU may be shared. ``--out`` appends one JSON line
a case.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

DEFAULT = [
    "random:10000:0", "carry:10000", "random:100000:0", "random:100000:1", "random:100000:2",
    "random:100000:3", "random:100000:4", "carry:1000000", "random:1000000:0", "random:1000000:1",
    "run:1000000",
]  # fmt: skip


def problem(task, case: str):
    kind, digits, *seed = case.split(":")
    n = int(digits)
    if kind == "random":
        from random import Random

        return task.sample_eval(Random(int(seed[0]) if seed else 0), str(n))
    if kind not in ("carry", "run"):
        raise ValueError(f"bad case {case!r}: KIND is random, carry or run")
    if task.name.startswith("multiplication"):
        return task.parse("9" * n + "*" + "9" * task.max_b if kind == "carry" else "4" * n + "*2")
    if task.name == "addition":
        return task.parse("9" * n + "+1" if kind == "carry" else "4" * n + "+" + "5" * n)
    raise ValueError(f"case {case!r}: carry and run are defined for addition and multiplication, not {task.name}")


def first_wrong(expected: str, got: str) -> int | None:
    """The first differing digit from the least significant (0), or None when equal."""
    if expected == got:
        return None
    e, g = expected[::-1], got[::-1]
    for i in range(max(len(e), len(g))):
        if i >= len(e) or i >= len(g) or e[i] != g[i]:
            return i
    return None  # pragma: no cover


def one(checkpoint: str, case: str, engine: str) -> dict:
    import torch

    torch.set_num_threads(1)
    from toolssm import engine as compiled
    from toolssm.checkpoint import load_checkpoint
    from toolssm.rollout import rollout
    from toolssm.tasks import get_task

    loaded = load_checkpoint(checkpoint)
    task = get_task(loaded.task)
    p = problem(task, case)
    ep = task.episode(p, max_tokens=task.token_budget(p))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0, c0 = time.perf_counter(), time.process_time()
    (res,) = rollout(loaded.model, loaded.vocab, [ep], engine=engine)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    verdict = task.verify(p, ep)
    got = "".join(res.output)
    wrong = None if verdict.correct else first_wrong(verdict.expected, got)
    return dict(
        case=case, engine=engine, exact=bool(verdict.correct), first_wrong_digit=wrong,
        terminated=res.terminated, tokens=res.n_tokens, wall_s=round(wall, 2), cpu_s=round(cpu, 2),
        tok_per_s=round(res.n_tokens / wall), us_per_tok_cpu=round(cpu / res.n_tokens * 1e6, 3),
        tool_bytes=getattr(compiled.decode, "last_tool_bytes", None) if engine != "torch" else None,
        rss_before_mb=round(rss0), peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        load=os.getloadavg()[0], threads=torch.get_num_threads(),
    )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", nargs="+", default=["runs/demo"], help="one or more; each runs every case")
    ap.add_argument("--cases", nargs="+", default=DEFAULT)
    ap.add_argument("--engine", default="compiled", choices=("compiled", "torch"))
    ap.add_argument("--out", default=None, help="append one JSON line a case to this file")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one case, print its JSON
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.checkpoint[0], args.one, args.engine)), flush=True)
        return
    print(f"{'case':>18} {'exact':>5} {'wrong@':>7} {'tokens':>12} {'wall s':>8} {'tok/s':>8} {'us/tok cpu':>10}"
          f" {'tool MB':>8} {'RSS MB':>7} {'load':>5}", flush=True)  # fmt: skip
    for ckpt in args.checkpoint:
        if len(args.checkpoint) > 1:
            print(f"{ckpt}:", flush=True)
        for case in args.cases:
            cmd = [sys.executable, __file__, "--checkpoint", ckpt, "--engine", args.engine, "--one", case]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{case:>18} failed: {out.stderr.strip().splitlines()[-1:]}", flush=True)
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            r["checkpoint"] = ckpt
            tool_mb = "-" if r["tool_bytes"] is None else f"{r['tool_bytes'] / 2**20:.1f}"
            wrong = "-" if r["first_wrong_digit"] is None else str(r["first_wrong_digit"])
            print(f"{case:>18} {'yes' if r['exact'] else 'NO':>5} {wrong:>7}"
                  f" {r['tokens']:>12,} {r['wall_s']:>8.1f} {r['tok_per_s']:>8,} {r['us_per_tok_cpu']:>10.2f}"
                  f" {tool_mb:>8} {r['peak_rss_mb']:>7} {r['load']:>5.1f}", flush=True)  # fmt: skip
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
