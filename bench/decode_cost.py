"""Per-token decode cost against context length, for every registered model, side by side in one run.

    python bench/decode_cost.py --contexts 100 10000 --steps 200

Each model (its `cpu` preset, random weights: cost does not depend on what was learned) first takes a
context of C tokens through its parallel forward, then decodes `--steps` tokens with `step`, timed.
Prints microseconds per token and the ratio against the shortest context. A GSSM's ratio stays near 1;
a full-attention Transformer's grows with its KV cache.
"""

from __future__ import annotations

import argparse
import time

import torch

from toolssm.models import ModelConfig, build_model, model_names, resolve


@torch.no_grad()
def prefill(model, context: int, steps: int, vocab: int, batch: int):
    """The state after a random context of `context` tokens, and the `steps` tokens to decode from it."""
    g = torch.Generator().manual_seed(0)
    ctx = torch.randint(0, vocab, (batch, context), generator=g)
    state = None
    for s in range(0, context, 2048):  # chunked prefill keeps memory flat
        _, state = model(ctx[:, s : s + 2048], state)
    return state, torch.randint(0, vocab, (steps, batch), generator=g)


@torch.no_grad()
def decode_us(model, state, toks) -> float:
    """Microseconds per token to decode `toks` from `state` (the same start state every call)."""
    t0 = time.perf_counter()
    st = state
    for t in range(toks.shape[0]):
        _, st = model.step(toks[t], st)
    return 1e6 * (time.perf_counter() - t0) / toks.shape[0]


def per_token_us(model, contexts: list[int], steps: int, vocab: int, batch: int, repeats: int) -> list[float]:
    """Per-token decode cost at each context length. The contexts are timed in turn within each repeat, so a
    slow spell of a shared machine hits all of them alike; each keeps its fastest (least disturbed) repeat."""
    starts = [prefill(model, c, steps, vocab, batch) for c in contexts]
    decode_us(model, *starts[0])  # warm-up: first-call costs (allocations, lazy init) are not decode cost
    best = [float("inf")] * len(contexts)
    for _ in range(repeats):
        for i, (state, toks) in enumerate(starts):
            best[i] = min(best[i], decode_us(model, state, toks))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=model_names())
    ap.add_argument("--contexts", type=int, nargs="+", default=[100, 10_000])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--vocab", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    head = " | ".join(f"{'ctx ' + str(c):>10}" for c in args.contexts)
    ratios = " | ".join(f"{'x' + str(c) + '/' + str(args.contexts[0]):>12}" for c in args.contexts[1:])
    print(f"per-token decode, us/token (batch {args.batch}, {args.threads} thread, cpu presets)")
    print(f"{'model':>15} | {'fixed state':>11} | {head} | {ratios}")
    for name in args.models:
        torch.manual_seed(0)
        model = build_model(name, args.vocab, resolve(ModelConfig(arch=name))).eval()
        us = per_token_us(model, args.contexts, args.steps, args.vocab, args.batch, args.repeats)
        cells = " | ".join(f"{u:>10.1f}" for u in us)
        rcells = " | ".join(f"{u / us[0]:>12.2f}" for u in us[1:])
        print(f"{name:>15} | {str(model.fixed_state):>11} | {cells} | {rcells}", flush=True)


if __name__ == "__main__":
    main()
