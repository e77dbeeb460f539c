"""End-to-end cost of a tool-in-the-loop solve against problem size: a recurrent model vs a Transformer.

    python bench/efficiency.py --digits 10 100 1000 10000 --recurrent lstm

Both models get the same parameter budget: the Transformer (pythia, full attention) is sized to the
recurrent model's parameter count (both counts are printed). Each solve is one addition of two N-digit
numbers, decoded one token at a time with the real pointer-memory tool in the loop: every generated
token goes through `protocol.Episode` (which runs the tool) and every observation comes back from the
tool, exactly as in `toolssm.rollout`. The model computes its next-token logits at every step, but the
token fed back is the expert's, so the solve always has the expert's length (about 36 tokens per digit)
whatever the weights: wall time and memory do not depend on the weights' values, so the models are
untrained (random init). The episode's answer is checked by the task's verifier.

Per (model, size), in a fresh child process: the solve's CPU time (``time.process_time``: one thread, so on
a quiet machine it is the wall time, and it stays meaningful on a shared one), tokens per second, the decoding
state's size at the end (the recurrent state is fixed; the Transformer's KV cache grows with the context),
and the peak RSS growth during the solve (ru_maxrss after minus before).

The Transformer's solve costs O(L^2): each step reads its whole KV cache (appending to the cache is O(1)
amortized, `models.attention.extend_cache`). Where the estimated solve time exceeds ``--cap`` seconds it
is not run; instead the per-token cost is measured at several context lengths up to the solve's full
length (a KV cache of that shape), fitted as a + b*C, and the solve time is the sum over the solve's
steps: a*L + b*L^2/2. Those cells are marked "extrap.".
Likewise ``--rec-cap`` for the recurrent model, whose per-token cost is constant (fixed-size state): past it,
the last measured solve's CPU time per token times the solve's length.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from collections import deque

import torch

from toolssm.protocol import TRAINED_ROLES



def build(arch: str, vocab_size: int, target: int | None):
    from toolssm.models import ModelConfig, build_model, n_params, resolve

    if target is None:
        model = build_model(arch, vocab_size, resolve(ModelConfig(arch=arch)))
        return model, {}
    best = None
    for d in range(16, 1025, 4):  # pythia: 2 layers, 4 heads, d_ff = 4 d; the count grows with d
        kw = {"d_model": d, "n_layers": 2, "d_ff": 4 * d}
        n = n_params(build_model(arch, vocab_size, resolve(ModelConfig(arch=arch, **kw))))
        if best is None or abs(n - target) < abs(best[0] - target):
            best = (n, kw)
        if n > target:
            break
    kw = best[1]
    return build_model(arch, vocab_size, resolve(ModelConfig(arch=arch, **kw))), kw


def state_bytes(state) -> int:
    return sum(s.numel() * s.element_size() for s in state if isinstance(s, torch.Tensor)) if state else 0


@torch.no_grad()
def forced_solve(model, vocab, task, problem) -> dict:
    """Decode one problem with the tool in the loop, feeding back the expert's generated tokens."""
    ref = task.demonstrate(problem)
    gen = deque(t for t, r in zip(ref.tokens, ref.roles) if r in TRAINED_ROLES)  # the generated tokens
    tok2id = {t: i for i, t in enumerate(vocab.tokens)}
    ep = task.episode(problem)
    queue = deque(ep.reset())
    model.eval()
    warm = None
    for _ in range(8):  # first-call allocations (workspaces, kernels) are not the solve's growth
        _, warm = model.step(torch.tensor([tok2id[queue[0]]]), warm)
    del warm
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0, c0 = time.perf_counter(), time.process_time()
    state, tok, n = None, queue.popleft(), 1
    while True:
        logits, state = model.step(torch.tensor([tok2id[tok]]), state)
        logits.argmax(-1).item()  # the greedy choice a real rollout makes (and waits for)
        if queue:
            tok = queue.popleft()
        else:
            tok = gen.popleft()
            st = ep.step(tok)
            if st.terminated:  # [EOS]: generated (and counted) but not fed back
                n += 1
                break
            queue.extend(st.observation)
        n += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert task.verify(problem, ep).correct and n == len(ref), "the forced solve left the expert's path"
    return {"tokens": n, "seconds": cpu, "wall_s": wall, "state_mb": state_bytes(state) / 2**20,
            "rss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024}  # fmt: skip


@torch.no_grad()
def per_token_cost(model, contexts: list[int], steps: int = 20) -> list[tuple[int, float]]:
    """Seconds per decode step of pythia with a KV cache of each context length (values random)."""
    L, H = len(model.layers), model.layers[0].attention.n_heads
    Dh = model.layers[0].attention.d_head
    out = []
    for c in contexts:
        state = (torch.randn(1, L, H, c, Dh), torch.randn(1, L, H, c, Dh), torch.tensor([c]))
        tok = torch.tensor([3])
        _, s = model.step(tok, state)  # warm-up: the first step moves the cache into a buffer with room
        t0 = time.process_time()
        for _ in range(steps):
            logits, s = model.step(tok, s)
            logits.argmax(-1).item()
        out.append((c, (time.process_time() - t0) / steps))
        del state, s
    return out


def child(args) -> None:
    from toolssm.models import n_params
    from toolssm.tasks import get_task

    torch.set_num_threads(1)
    torch.manual_seed(0)
    task = get_task("addition")
    vocab = task.vocab()
    model, kw = build(args.arch, len(vocab), args.match)
    problem = task.sample_eval(random.Random(f"bench:{args.digits}"), str(args.digits))
    rec = {"arch": args.arch, "digits": args.digits, "params": n_params(model), "config": kw}
    if args.mode == "solve":
        rec.update(forced_solve(model, vocab, task, problem))
    else:  # the per-token cost curve of a solve of this size
        n = len(task.demonstrate(problem))
        contexts = sorted({max(1, n // 8), n // 4, n // 2, n})
        rec.update(tokens=n, cost=per_token_cost(model, contexts))
    print(json.dumps(rec))


def run_child(arch: str, digits: int, mode: str, match: int | None) -> dict:
    cmd = [sys.executable, __file__, "--child", "--arch", arch, "--digits", str(digits), "--mode", mode]
    if match is not None:
        cmd += ["--match", str(match)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def fit(cost: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares a + b*C."""
    xs, ys = [c for c, _ in cost], [t for _, t in cost]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / max(1e-12, sum((x - mx) ** 2 for x in xs))
    return my - b * mx, b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--digits", type=int, nargs="+", default=[10, 100, 1000, 10000])
    ap.add_argument("--recurrent", default="lstm", help="the recurrent model (cpu preset): lstm, gru, mamba, ...")
    ap.add_argument("--cap", type=float, default=120.0, help="longest Transformer solve to run for real (CPU s)")
    ap.add_argument("--rec-cap", type=float, default=float("inf"),
                    help="longest recurrent solve to run for real (CPU s); past it, the last measured per-token "
                    "cost (constant for a fixed-size state) times the solve's length")  # fmt: skip
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--arch", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="solve", help=argparse.SUPPRESS)
    ap.add_argument("--match", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.digits = args.digits[0]
        child(args)
        return
    rows = []
    target = last = None
    for d in args.digits:
        rec = None
        if target is None:
            rec = run_child(args.recurrent, d, "solve", None)
            target = rec["params"]
        cost = run_child("pythia", d, "cost", target)
        a, b = fit(cost["cost"])
        n = cost["tokens"]
        if rec is None:
            per_tok = last["seconds"] / last["tokens"]
            if per_tok * n <= args.rec_cap:
                rec = run_child(args.recurrent, d, "solve", None)
            else:
                rec = {**last, "tokens": n, "seconds": per_tok * n, "wall_s": None, "rss_growth_mb": None,
                       "extrapolated": True}  # fmt: skip
        last = rec if not rec.get("extrapolated") else last
        est = a * n + b * n * n / 2
        if est <= args.cap:
            tr = run_child("pythia", d, "solve", target)
            tr["extrapolated"] = False
        else:
            kv = cost["cost"]  # per-token cost at each context; the last is the full solve's
            tr = {"params": cost["params"], "config": cost["config"], "tokens": n, "seconds": est, "extrapolated": True,
                  "rss_growth_mb": None, "state_mb": None,
                  "per_token_ms_at_end": 1e3 * max(t for c, t in kv if c == n)}  # fmt: skip
        tr["fit"] = (a, b)
        rows.append((d, rec, tr))
        print(json.dumps({"digits": d, "recurrent": rec, "transformer": tr}), flush=True)
    _, rec0, tr0 = rows[0]
    print(f"\nend-to-end tool-in-the-loop solve of one N-digit addition, 1 thread, CPU seconds, untrained weights "
          f"(timing does not depend on them)\n{args.recurrent}: {rec0['params']:,} params (cpu preset);  "
          f"pythia: {tr0['params']:,} params (4 heads, {json.dumps(tr0['config'])})\n")  # fmt: skip
    head = (f"| digits | tokens | {args.recurrent} s | pythia s | time ratio | {args.recurrent} tok/s | "
            f"pythia tok/s | {args.recurrent} state MB | pythia KV MB | {args.recurrent} RSS growth MB | "
            f"pythia RSS growth MB |")  # fmt: skip
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for d, r, t in rows:
        mark = " (extrap.)" if t["extrapolated"] else ""
        rmark = " (extrap.)" if r.get("extrapolated") else ""
        kv_mb = t["state_mb"] if t["state_mb"] is not None else kv_estimate(t, rows)
        mb = lambda x: "–" if x is None else f"{x:.1f}"  # noqa: E731
        print(f"| {d:,} | {r['tokens']:,} | {r['seconds']:.2f}{rmark} | {t['seconds']:.2f}{mark} | "
              f"{t['seconds'] / r['seconds']:.1f}x | {r['tokens'] / r['seconds']:,.0f} | "
              f"{t['tokens'] / t['seconds']:,.0f}{mark} | {r['state_mb']:.3f} | {kv_mb:.1f}"
              f"{' (calc.)' if t['state_mb'] is None else ''} | {mb(r['rss_growth_mb'])} | "
              f"{mb(t['rss_growth_mb'])} |")  # fmt: skip


def kv_estimate(t: dict, rows) -> float:
    """The KV cache at the end of an extrapolated solve: scaled from a measured solve's (it is linear in L)."""
    for _, _, m in rows:
        if m.get("state_mb"):
            return m["state_mb"] * t["tokens"] / m["tokens"]
    return float("nan")


if __name__ == "__main__":
    main()
