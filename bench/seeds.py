"""Robustness across seeds: train the demo recipe with N seeds and count how many generalize.

    python bench/seeds.py --seeds 0 1 2 3 4 5 6 7 8 9 --jobs 2 --out runs/seeds

Each seed trains `toolssm demo`'s recipe (any TrainConfig flag can follow `--`, e.g. `-- --model gru`) in
its own process with one torch thread, `--jobs` at a time, then is evaluated at --lengths. A seed
"generalizes" when its answer accuracy at the largest length is 100%. Results go to <out>/seeds.jsonl
(one record per seed; finished seeds are skipped on a rerun).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CHILD = """
import json, sys, time, torch
torch.set_num_threads(1)
import tyro
from toolssm.train import TrainConfig, train
from toolssm.checkpoint import load_checkpoint
from toolssm.evaluate import evaluate
from toolssm.tasks import get_task
seed, out, lengths, n, extra = int(sys.argv[1]), sys.argv[2], sys.argv[3].split(','), int(sys.argv[4]), sys.argv[5:]
cfg = tyro.cli(TrainConfig, args=[*extra, '--seed', str(seed), '--out', out, '--no-progress', '--resume'])
t0 = time.perf_counter(); ckpt = train(cfg); t_train = time.perf_counter() - t0
L = load_checkpoint(ckpt)
res = evaluate(L.model, get_task(cfg.task), L.vocab, lengths, n_problems=n, progress=False)
print(json.dumps({'seed': seed, 'train_s': round(t_train, 1), 'arch': cfg.model.arch,
                  'results': {r.spec: {'answer': r.answer_acc, 'trajectory': r.trajectory_acc} for r in res}}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="runs/seeds")
    ap.add_argument("--lengths", default="5,10,100,1000")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("extra", nargs="*", help="TrainConfig flags, after --")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "seeds.jsonl"
    done = {json.loads(line)["seed"]: json.loads(line) for line in log.open()} if log.exists() else {}

    def run(seed: int) -> dict:
        if seed in done:
            return done[seed]
        cmd = [sys.executable, "-c", CHILD, str(seed), str(out / f"seed{seed}"), args.lengths, str(args.n), *args.extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if proc.returncode != 0:
            raise SystemExit(f"seed {seed} failed:\n{proc.stderr[-2000:]}")
        rec = json.loads(proc.stdout.strip().splitlines()[-1])
        with log.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(f"seed {seed}: {rec['results']}  (trained {rec['train_s']:.0f}s)", flush=True)
        return rec

    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        recs = list(pool.map(run, args.seeds))
    top = args.lengths.split(",")[-1]
    ok = [r["seed"] for r in recs if r["results"][top]["answer"] == 1.0]
    print(f"\n{len(ok)} of {len(recs)} seeds are exact on all {args.n} problems at size {top} "
          f"(seeds {ok}); wall time {time.perf_counter() - t0:.0f}s")  # fmt: skip
    for r in recs:
        cells = "  ".join(f"{k}: {v['answer']:.0%}" for k, v in r["results"].items())
        print(f"  seed {r['seed']:>2}  {cells}")


if __name__ == "__main__":
    main()
