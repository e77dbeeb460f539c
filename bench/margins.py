"""Teacher-forced margins along the expert's trajectory: how close a checkpoint is to its first wrong token.

    python bench/margins.py runs/demo                          # addition at 1,000 (20 problems) and 10,000 (4)
    python bench/margins.py CKPT_A CKPT_B --sizes 1000:20 10000:4 --task addition

Greedy decoding reproduces the expert's trajectory exactly if and only if, at every generated position, the
expert's token is the model's strict argmax given the expert's prefix: the margin (its logit minus the best other
logit) is positive. One parallel forward pass over the expert's trajectory gives every margin at once, so this
measures a checkpoint at sizes far past what decoding 20 problems would take, and it says more than exact/not: how
many positions are wrong (per million generated tokens), and the smallest margin (how far from failing a size
that decodes exactly is). Problems are drawn as `toolssm eval` draws them (evaluation seed 1234 by default).

Used to find what made seed 0 of the old addition recipe fail (docs/design.md, "Seeds"): negative margins in p1's
walk, scattered along it, not a drift that grows with the walk's length.
"""

from __future__ import annotations

import argparse
import random

import torch

from common import load_or_exit
from toolssm.tasks import get_task


def margins(model, vocab, trajectory) -> torch.Tensor:
    """The margin at every generated (trained) position of ``trajectory``: expert logit minus the best other."""
    ids = torch.tensor([vocab.ids(trajectory.tokens)])
    with torch.no_grad():
        logits = model(ids)[0][0, :-1].float()  # (T-1, V): the prediction of token t+1
    target = ids[0, 1:]
    top = logits.gather(1, target[:, None])[:, 0]
    logits.scatter_(1, target[:, None], float("-inf"))
    return (top - logits.max(1).values)[torch.tensor(trajectory.loss_mask()[1:])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--task", default="addition")
    ap.add_argument("--sizes", nargs="+", default=["1000:20", "10000:4"], help="SIZE:PROBLEMS ...")
    ap.add_argument("--eval-seed", type=int, default=1234)
    args = ap.parse_args()
    torch.set_num_threads(1)
    task = get_task(args.task)
    print(f"{'checkpoint':>28} {'size':>7} {'exact':>7} {'wrong tokens':>14} {'per M':>8} {'min margin':>10}")
    for path in args.checkpoints:
        loaded = load_or_exit(path)
        model = loaded.model.eval()
        for item in args.sizes:
            spec, _, n = item.partition(":")
            rng = random.Random(f"eval:{args.eval_seed}:{spec}")
            exact = wrong = total = 0
            low = float("inf")
            for _ in range(int(n or 20)):
                m = margins(model, loaded.vocab, task.demonstrate(task.draw(rng, spec)))
                bad = int((m <= 0).sum())
                exact, wrong, total, low = exact + (bad == 0), wrong + bad, total + m.numel(), min(low, float(m.min()))
            print(f"{path[-28:]:>28} {spec:>7} {exact:>3}/{n or 20:<3} {wrong:>14,} {1e6 * wrong / total:>8.1f}"
                  f" {low:>10.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
