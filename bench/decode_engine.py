"""The compiled decode engine (toolssm.engine) against the torch rollout, side by side in one process.

    python bench/decode_engine.py                       # speed: rollout tokens/s, batch 1 and 20; Mamba vs HF
    python bench/decode_engine.py --check runs/demo:10,100,1000 runs/tm:8,32   # identity on trained checkpoints

Speed. For each architecture (lstm, gru, mamba at the cpu preset): the demo checkpoint where it is of that
architecture (--checkpoint), else a randomly initialised model with its weights scaled by 3 (so that it decodes
a varied stream until its token budget), on addition. One episode (batch 1), then 20 episodes (batch 20), each
decoded by engine="torch" and engine="compiled" in turn, --repeat times (the least time of each path is kept);
the results must be identical. tokens/s is tokens fed over seconds; both the wall clock and the process CPU time
are reported (the machine may be shared: the CPU time does not count time descheduled), with the load average.

Mamba decode per token: the same config three ways, batch 1, after a 16-token prefill: our Mamba.step (torch),
the engine's Mamba kernel (model step and argmax only, no tool), and transformers' MambaForCausalLM with its
cache (cache_params), as in bench/models.py (transformers is optional: skipped without it).

Check (--check CKPT:SIZES ...): 20 problems a size, batch 1 and batch 20, engine vs torch: identical results or,
for a differing episode, the first differing position and torch's logit margin there.
"""

from __future__ import annotations

import argparse
import os
import random
import time

import torch

from toolssm.models.base import ModelConfig, build_model, resolve
from toolssm.rollout import rollout
from toolssm.tasks import get_task


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def side_by_side(model, task, vocab, problems, max_tokens, batch, repeat=1):
    """Both engines on the same problems, alternately, ``repeat`` times; -> (identical, tokens, {engine: (wall,
    cpu)}), each time the least of the repeats (the machine may be shared: the least is the least disturbed)."""
    res, times = {}, {}
    for _ in range(repeat):
        for engine in ("compiled", "torch"):
            eps = [task.episode(p, max_tokens=max_tokens or task.token_budget(p)) for p in problems]
            if batch:
                r, w, c = timed(lambda: rollout(model, vocab, eps, engine=engine))
            else:
                r, w, c = timed(lambda: [rollout(model, vocab, [e], engine=engine)[0] for e in eps])
            if engine in res and r != res[engine]:
                raise AssertionError(f"engine={engine} decoded differently on a repeat")
            res[engine] = r
            times[engine] = tuple(map(min, zip(times.get(engine, (w, c)), (w, c))))
    return res["compiled"] == res["torch"], sum(x.n_tokens for x in res["torch"]), times


def model_for(arch: str, checkpoint: str | None, vocab_size: int):
    if checkpoint:
        from toolssm.checkpoint import load_checkpoint

        loaded = load_checkpoint(checkpoint)
        if type(loaded.model).__name__.lower() == arch:
            return loaded.model, "trained"
    torch.manual_seed(0)
    model = build_model(arch, vocab_size, resolve(ModelConfig(arch=arch)))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return model, "random x3"


def speed(args) -> None:
    task = get_task("addition")
    vocab = task.vocab()
    print(f"rollout, addition, 1 torch thread, load average {os.getloadavg()[0]:.1f}; best of {args.repeat} runs a"
          " path; tok/s of wall time, then of process CPU time (unaffected by other jobs' time on the cores)")
    print(f"{'model':>18} {'batch':>5} {'tokens':>8} {'same':>5} {'torch tok/s':>12} {'engine tok/s':>13}"
          f" {'ratio wall':>10} {'torch cpu':>11} {'engine cpu':>11} {'ratio cpu':>9} {'load':>5}")  # fmt: skip
    for arch in args.archs:
        model, kind = model_for(arch, args.checkpoint, len(vocab))
        # warm-up: numba loads (or compiles) the loop of this (model, tool) pair
        rollout(model, vocab, [task.episode(task.draw(random.Random(0), "2"), max_tokens=20)], engine="compiled")
        for batch, n, size in ((1, 1, args.size), (20, 20, args.batch_size_digits)):
            problems = [task.draw(random.Random(100 + i), str(size)) for i in range(n)]
            max_tokens = None if kind == "trained" else args.random_tokens
            same, ntok, t = side_by_side(model, task, vocab, problems, max_tokens, batch=True, repeat=args.repeat)
            (tw, tc), (ew, ec) = t["torch"], t["compiled"]
            print(f"{arch + ' ' + kind:>18} {batch:>5} {ntok:>8,} {'yes' if same else 'NO':>5} {ntok / tw:>12,.0f}"
                  f" {ntok / ew:>13,.0f} {tw / ew:>9.1f}x {ntok / tc:>11,.0f} {ntok / ec:>11,.0f} {tc / ec:>8.1f}x"
                  f" {os.getloadavg()[0]:>5.1f}", flush=True)  # fmt: skip
    mamba_vs_hf(args)


def mamba_vs_hf(args) -> None:
    import numpy as np

    from toolssm.engine import mamba as mk
    from toolssm.models.mamba import Mamba

    print(f"\nMamba decode per token, batch 1, 1 thread, load average {os.getloadavg()[0]:.1f} (CPU time, best of 3)")
    print(f"{'config':>8} {'ours torch ms':>13} {'engine ms':>10} {'HF cache ms':>12} {'engine vs HF':>13}"
          f" {'engine vs torch':>15}")  # fmt: skip
    V, n_tok = 32, args.hf_tokens
    for cfg in args.mamba_configs:
        d, L = (int(x) for x in cfg.split("x"))
        torch.manual_seed(0)
        ours = Mamba(V, d, L, d_state=16, d_conv=4, expand=2).eval()
        toks = torch.randint(0, V, (n_tok + 16,), generator=torch.Generator().manual_seed(0))

        def run_ours():
            with torch.no_grad():
                _, st = ours(toks[None, :16])
                c = time.process_time()
                for i in range(n_tok):
                    _, st = ours.step(toks[16 + i : 17 + i], st)
                return (time.process_time() - c) / n_tok

        mp, S, scratch_fn = mk.mamba_pack(ours)
        state, sc, logits = np.zeros((1, S), np.float32), scratch_fn(1), np.zeros((1, V), np.float32)
        tk = toks.numpy().astype(np.int64)

        def run_engine():
            for i in range(16):
                mk.mamba_step(mp, tk[i : i + 1], state, sc, logits, 1)
            c = time.process_time()
            for i in range(n_tok):
                mk.mamba_step(mp, tk[16 + i : 17 + i], state, sc, logits, 1)
            return (time.process_time() - c) / n_tok

        hf = None
        try:
            import transformers

            hcfg = transformers.MambaConfig(vocab_size=V, hidden_size=d, state_size=16, num_hidden_layers=L,
                                            expand=2, conv_kernel=4, use_mambapy=False, tie_word_embeddings=True)
            hf = transformers.MambaForCausalLM(hcfg).eval()  # fmt: skip
        except ImportError:
            pass

        def run_hf():
            with torch.no_grad():
                cache = hf(input_ids=toks[None, :16], use_cache=True).cache_params
                c = time.process_time()
                for i in range(n_tok):
                    out = hf(input_ids=toks[None, 16 + i : 17 + i], cache_params=cache, use_cache=True)
                    cache = out.cache_params
                return (time.process_time() - c) / n_tok

        run_engine()  # warm-up
        o = min(run_ours() for _ in range(3))
        e = min(run_engine() for _ in range(3))
        h = min(run_hf() for _ in range(3)) if hf is not None else float("nan")
        print(f"{cfg:>8} {o * 1e3:>13.3f} {e * 1e3:>10.4f} {h * 1e3:>12.3f} {h / e:>12.0f}x {o / e:>14.0f}x",
              flush=True)


def check(args) -> None:
    from toolssm.checkpoint import load_checkpoint

    print(f"identity, engine vs torch rollout, 20 problems a size, 1 thread, load {os.getloadavg()[0]:.1f}")
    for spec in args.check:
        ckpt, _, sizes = spec.partition(":")
        loaded = load_checkpoint(ckpt)
        task, vocab, model = get_task(loaded.task), loaded.vocab, loaded.model
        for size in sizes.split(","):
            problems = [task.draw(random.Random(f"check:{size}:{i}"), size) for i in range(args.n_problems)]
            for batch in (True, False):
                same, ntok, t = side_by_side(model, task, vocab, problems, None, batch)
                eps = [task.episode(p, max_tokens=task.token_budget(p)) for p in problems]
                rollout(model, vocab, eps, engine="compiled")
                n_ok = sum(task.verify(p, ep).correct for p, ep in zip(problems, eps))
                print(f"{loaded.task:>14} {type(model).__name__:>6} size {size:>6} batch {20 if batch else 1:>2}:"
                      f" {'identical' if same else 'DIFFERENT'} ({ntok:,} tokens; {n_ok}/{len(problems)} correct;"
                      f" torch {t['torch'][0]:.1f}s, engine {t['compiled'][0]:.1f}s wall)", flush=True)  # fmt: skip
                if not same:
                    report_difference(model, task, vocab, problems)


def report_difference(model, task, vocab, problems) -> None:
    """For each differing episode: the first differing token and torch's logit margin there."""
    for p in problems:
        out = {}
        for engine in ("torch", "compiled"):
            (r,) = rollout(model, vocab, [task.episode(p, max_tokens=task.token_budget(p), record=True)], engine=engine)
            out[engine] = vocab.ids(r.trajectory.tokens)
        a, b = out["torch"], out["compiled"]
        if a == b:
            continue
        k = next((j for j, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        with torch.no_grad():
            logits, _ = model(torch.tensor([a[:k]]))
        top = logits[0, -1].topk(2).values
        print(f"    first difference at token {k}: torch logit margin {float(top[0] - top[1]):.3g}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None,
                    help="a trained model for its architecture's rows (default: runs/demo where it exists)")
    ap.add_argument("--archs", nargs="+", default=["lstm", "gru", "mamba"])
    ap.add_argument("--size", default=100, type=int, help="digits of the batch-1 problem")
    ap.add_argument("--batch-size-digits", default=10, type=int, help="digits of the batch-20 problems")
    ap.add_argument("--random-tokens", default=3000, type=int, help="token budget of a random model's episode")
    ap.add_argument("--mamba-configs", nargs="*", default=["64x2", "256x4"], help="d_model x layers (none: skip)")
    ap.add_argument("--hf-tokens", default=200, type=int)
    ap.add_argument("--check", nargs="*", default=None, help="CKPT:SIZE1,SIZE2 ... (identity, not speed)")
    ap.add_argument("--n-problems", default=20, type=int)
    ap.add_argument("--repeat", default=3, type=int, help="runs of each path a speed row (the least time is kept)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.checkpoint is None:
        args.checkpoint = "runs/demo" if os.path.exists("runs/demo") else ""
    if args.check:
        check(args)
    else:
        speed(args)


if __name__ == "__main__":
    main()
