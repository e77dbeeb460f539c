"""Mamba-1 on the CPU: training throughput and per-token decode time, ours against transformers'.

    python bench/models.py                                   # the defaults below, 1 thread, about 2 minutes
    python bench/models.py --configs 256x4:8x256 --threads 2
    python bench/models.py --no-hf                           # ours only (also automatic without transformers)

For each config D x L : B x T (d_model x layers : batch x sequence length), three models of the same shape
(d_state 16, expand 2, d_conv 4, tied embeddings, --vocab tokens) run side by side in this one process:

    ours       toolssm's Mamba with the fused CPU scan (toolssm.models.scan_cpu, numba)
    reference  toolssm's Mamba with the pure-PyTorch scan (scan="torch")
    hf         transformers.MambaForCausalLM with use_mambapy=True: mambapy's parallel scan (pscan) over the
               full (B, T, d_inner, d_state) tensors; its decode uses the cache (cache_params) one token at a time

train: one forward + backward of a next-token cross-entropy on random tokens (B, T), no optimizer step;
tokens/s = B * T / (seconds per step). decode: ms per generated token at batch --decode-batch, after a
T-token prefill, through each model's recurrent state (ours: model.step; hf: cache_params). Times are the
best of --reps runs after a warm-up (the machine may be shared; the best run is the least disturbed).

Defaults: 256x4:8x256 (the issue's measurement point) and 64x2:32x240 (the cpu preset at its training
batch and length). transformers (5.x) and mambapy are not dependencies of toolssm: pip install transformers
mambapy. Without mambapy transformers silently falls back to a Python loop over time, so this refuses that.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the network (hub kernels, configs)
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from toolssm.models import n_params  # noqa: E402
from toolssm.models import scan_cpu  # noqa: E402
from toolssm.models.mamba import Mamba  # noqa: E402


def parse_config(s: str) -> tuple[int, int, int, int]:
    try:
        shape, run = s.split(":")
        d, L = (int(v) for v in shape.split("x"))
        B, T = (int(v) for v in run.split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad config {s!r}: want D_MODELxLAYERS:BATCHxSEQ, e.g. 256x4:8x256")
    return d, L, B, T


def best_time(fn, reps: int) -> float:
    fn()  # warm-up (numba compiles or loads its cache here; allocator, etc.)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


# ----------------------------------------------------------------------------------------------------------
# the models and what is timed, behind one interface: train_step(tokens), prefill(tokens), decode(token)


class Ours:
    def __init__(self, vocab, d, L, args, scan):
        self.model = Mamba(vocab, d, L, d_state=args.d_state, d_conv=args.d_conv, expand=args.expand, scan=scan)

    def logits(self, tokens):
        return self.model(tokens)[0]

    def prefill(self, tokens):
        _, self.state = self.model(tokens)

    def decode(self, token):
        logits, self.state = self.model.step(token, self.state)
        return logits


class HF:
    def __init__(self, vocab, d, L, args):
        import transformers

        cfg = transformers.MambaConfig(
            vocab_size=vocab, hidden_size=d, state_size=args.d_state, num_hidden_layers=L, expand=args.expand,
            conv_kernel=args.d_conv, use_mambapy=True, tie_word_embeddings=True,
        )  # fmt: skip
        self.model = transformers.MambaForCausalLM(cfg)

    def logits(self, tokens):
        return self.model(input_ids=tokens, use_cache=False).logits

    def prefill(self, tokens):
        self.cache = self.model(input_ids=tokens, use_cache=True).cache_params

    def decode(self, token):
        out = self.model(input_ids=token[:, None], cache_params=self.cache, use_cache=True)
        self.cache = out.cache_params
        return out.logits[:, -1]


def measure(m, vocab: int, B: int, T: int, args) -> dict:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, vocab, (B, T + 1), generator=g)

    def train_step():
        m.model.train()
        m.model.zero_grad(set_to_none=True)
        logits = m.logits(tokens[:, :-1])  # (B, T, V)
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1)).backward()

    step_s = best_time(train_step, args.reps)

    m.model.eval()
    prompt = torch.randint(0, vocab, (args.decode_batch, T), generator=g)
    nxt = torch.randint(0, vocab, (args.decode_batch, args.decode_tokens + 1), generator=g)

    def decode_run():
        m.prefill(prompt)
        t0 = time.perf_counter()
        for i in range(args.decode_tokens):
            m.decode(nxt[:, i])
        return (time.perf_counter() - t0) / args.decode_tokens

    with torch.no_grad():
        decode_run()  # warm-up
        decode_s = min(decode_run() for _ in range(args.reps))
    return {"params": n_params(m.model), "step_s": step_s, "tok_s": B * T / step_s, "decode_ms": 1e3 * decode_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", type=parse_config, nargs="+", default=[parse_config("256x4:8x256"),
                    parse_config("64x2:32x240")], metavar="DxL:BxT",
                    help="d_model x layers : batch x sequence length (default: 256x4:8x256 64x2:32x240)")  # fmt: skip
    ap.add_argument("--vocab", type=int, default=32)
    ap.add_argument("--d-state", type=int, default=16)
    ap.add_argument("--expand", type=int, default=2)
    ap.add_argument("--d-conv", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the fused scan follows torch's count)")
    ap.add_argument("--reps", type=int, default=3, help="timed runs per measurement (the best is reported)")
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--decode-batch", type=int, default=1)
    ap.add_argument("--no-hf", action="store_true", help="skip transformers")
    ap.add_argument("--no-reference", action="store_true", help="skip our PyTorch reference scan")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    hf = not args.no_hf
    if hf and importlib.util.find_spec("transformers") is None:
        print("transformers is not installed: skipping it (pip install transformers mambapy)")
        hf = False
    if hf and importlib.util.find_spec("mambapy") is None:
        print("mambapy is not installed, so transformers would run a Python loop over time, not its mambapy"
              " path: skipping it (pip install mambapy)")  # fmt: skip
        hf = False
    if not scan_cpu.available():
        print("numba is not installed: 'ours' runs the PyTorch reference scan (pip install numba)")
    hf_version = "no transformers"
    if hf:
        import transformers

        hf_version = f"transformers {transformers.__version__}"
    print(f"torch {torch.__version__}, {hf_version}, {args.threads} thread(s); train: fwd+bwd, best of {args.reps};"
          f" decode: batch {args.decode_batch}, {args.decode_tokens} tokens after a T-token prefill\n")  # fmt: skip

    header = f"{'config':<16} {'model':<10} {'params':>9} {'train tok/s':>12} {'step ms':>9} {'decode ms/tok':>14}"
    rows, ratios = [], []
    for d, L, B, T in args.configs:
        name = f"{d}x{L}:{B}x{T}"
        models = {"ours": lambda: Ours(args.vocab, d, L, args, scan="auto")}
        if not args.no_reference:
            models["reference"] = lambda: Ours(args.vocab, d, L, args, scan="torch")
        if hf:
            models["hf"] = lambda: HF(args.vocab, d, L, args)
        res = {}
        for label, make in models.items():
            t0 = time.perf_counter()
            res[label] = r = measure(make(), args.vocab, B, T, args)
            rows.append(f"{name:<16} {label:<10} {r['params']:>9,} {r['tok_s']:>12,.0f} {1e3 * r['step_s']:>9.1f}"
                        f" {r['decode_ms']:>14.3f}")  # fmt: skip
            print(rows[-1], f"   ({time.perf_counter() - t0:.0f}s)", flush=True)
        r = res["ours"]
        if "hf" in res:
            o = res["hf"]
            ratios.append(f"{name:<16} ours vs hf:         train tokens/s x{r['tok_s'] / o['tok_s']:.2f},"
                          f" decode {o['decode_ms'] / r['decode_ms']:.2f}x faster per token")  # fmt: skip
        if "reference" in res:
            o = res["reference"]
            ratios.append(f"{name:<16} ours vs reference:  train tokens/s x{r['tok_s'] / o['tok_s']:.2f}"
                          " (decode runs the same step code in both)")  # fmt: skip

    print("\n" + header + "\n" + "-" * len(header) + "\n" + "\n".join(rows))
    print("\nratios (ours / theirs tokens per second; their decode ms / ours):\n" + "\n".join(ratios))


if __name__ == "__main__":
    main()
