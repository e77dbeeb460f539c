"""Mamba-1 and Mamba-2 on the CPU: training throughput and per-token decode time, ours against transformers'.

    python bench/models.py                                   # both sections, the defaults below, 1 thread
    python bench/models.py --arch mamba --configs 256x4:8x256 --threads 2
    python bench/models.py --arch mamba2 --m2-configs 256x4:8x256:16x32
    python bench/models.py --no-hf                           # ours only (also automatic without transformers)

Mamba-1 (--arch mamba). For each config D x L : B x T (d_model x layers : batch x sequence length), three
models of the same shape (d_state 16, expand 2, d_conv 4, tied embeddings, --vocab tokens) run side by side in
this one process:

    ours       toolssm's Mamba with the fused CPU scan (toolssm.models.scan_cpu, numba)
    reference  toolssm's Mamba with the pure-PyTorch scan (scan="torch")
    hf         transformers.MambaForCausalLM with use_mambapy=True: mambapy's parallel scan (pscan) over the
               full (B, T, d_inner, d_state) tensors; its decode uses the cache (cache_params) one token at a time

train: one forward + backward of a next-token cross-entropy on random tokens (B, T), no optimizer step;
tokens/s = B * T / (seconds per step). decode: ms per generated token at batch --decode-batch, after a
T-token prefill, through each model's recurrent state (ours: model.step; hf: cache_params). Times are the
best of --reps runs after a warm-up (the machine may be shared; the best run is the least disturbed); the
models of one config run interleaved, one round each in turn, so that a change of load reaches all of them.
--clock cpu times with the process's CPU time instead of the wall clock: on a machine shared with more busy
processes than cores, the time this process spends descheduled is then not counted (cache and memory-bandwidth
contention still is); with --threads 1 it is the single-core time.

Defaults: 256x4:8x256 (the issue's measurement point) and 64x2:32x240 (the cpu preset at its training
batch and length). transformers (5.x) and mambapy are not dependencies of toolssm: pip install transformers
mambapy. Without mambapy transformers silently falls back to a Python loop over time, so this refuses that.

Mamba-2 (--arch mamba2). For each config D x L : B x T : N x P (as above, then d_state x head_dim), two models
of the same shape (expand 2, d_conv 4, one B/C group, tied embeddings, chunk --m2-chunk for both) side by side:

    ours       toolssm's Mamba2: the chunked SSD in PyTorch (toolssm.models.mamba2)
    hf         transformers.Mamba2ForCausalLM on its PyTorch path (the torch fallbacks mamba2_chunk_scan,
               causal_conv1d_fn, ...: the chunked SSD with einsums; its kernels come from mamba_ssm /
               causal_conv1d, and this refuses to run it if they are installed); its decode goes through the
               cache (cache_params, a DynamicCache) one token at a time

Defaults: 256x4:8x256:64x64 (the issue's measurement point, 8 heads of 64), 256x4:8x256:16x32 (16 heads of
32, d_state 16) and 64x2:32x240:16x16 (the mamba2 cpu preset at its training batch and length).
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
from toolssm.models.mamba2 import Mamba2  # noqa: E402


def parse_config(s: str) -> tuple[int, int, int, int]:
    try:
        shape, run = s.split(":")
        d, L = (int(v) for v in shape.split("x"))
        B, T = (int(v) for v in run.split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad config {s!r}: want D_MODELxLAYERS:BATCHxSEQ, e.g. 256x4:8x256")
    return d, L, B, T


def parse_m2_config(s: str) -> tuple[int, int, int, int, int, int]:
    try:
        shape, run, ssm = s.split(":")
        N, P = (int(v) for v in ssm.split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad config {s!r}: want DxL:BxT:NxP (d_state x head_dim), e.g. 256x4:8x256:64x64"
        ) from None
    return (*parse_config(f"{shape}:{run}"), N, P)


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


class Ours2(Ours):
    def __init__(self, vocab, d, L, N, P, args):
        self.model = Mamba2(vocab, d, L, d_state=N, head_dim=P, expand=args.expand, d_conv=args.d_conv,
                            chunk=args.m2_chunk, tie_embeddings=True)  # fmt: skip


class HF2(HF):
    def __init__(self, vocab, d, L, N, P, args):
        import transformers

        d_inner = args.expand * d
        cfg = transformers.Mamba2Config(
            vocab_size=vocab, hidden_size=d, num_hidden_layers=L, state_size=N, head_dim=P, num_heads=d_inner // P,
            expand=args.expand, conv_kernel=args.d_conv, n_groups=1, chunk_size=args.m2_chunk,
            tie_word_embeddings=True,
        )  # fmt: skip
        self.model = transformers.Mamba2ForCausalLM(cfg)


def measure(models: dict, vocab: int, B: int, T: int, args) -> dict[str, dict]:
    """Time every model of one config, interleaved: each timed round runs every model once, so that a change in
    the machine's load (it may be shared) reaches all of them alike; each model's best round is reported."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, vocab, (B, T + 1), generator=g)
    prompt = torch.randint(0, vocab, (args.decode_batch, T), generator=g)
    nxt = torch.randint(0, vocab, (args.decode_batch, args.decode_tokens + 1), generator=g)

    def train_step(m):
        m.model.zero_grad(set_to_none=True)
        logits = m.logits(tokens[:, :-1])  # (B, T, V)
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1)).backward()

    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    def decode_run(m):
        m.prefill(prompt)
        t0 = clock()
        for i in range(args.decode_tokens):
            m.decode(nxt[:, i])
        return (clock() - t0) / args.decode_tokens

    step_s = {label: [] for label in models}
    for m in models.values():
        m.model.train()
        train_step(m)  # warm-up (numba compiles or loads its cache here; allocator, etc.)
    for _ in range(args.reps):
        for label, m in models.items():
            t0 = clock()
            train_step(m)
            step_s[label].append(clock() - t0)
    decode_s = {label: [] for label in models}
    with torch.no_grad():
        for m in models.values():
            m.model.eval()
            decode_run(m)  # warm-up
        for _ in range(args.reps):
            for label, m in models.items():
                decode_s[label].append(decode_run(m))
    return {
        label: {"params": n_params(m.model), "step_s": min(step_s[label]), "tok_s": B * T / min(step_s[label]),
                "decode_ms": 1e3 * min(decode_s[label])}  # fmt: skip
        for label, m in models.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", type=parse_config, nargs="+", default=[parse_config("256x4:8x256"),
                    parse_config("64x2:32x240")], metavar="DxL:BxT",
                    help="d_model x layers : batch x sequence length (default: 256x4:8x256 64x2:32x240)")  # fmt: skip
    m2_default = ("256x4:8x256:64x64", "256x4:8x256:16x32", "64x2:32x240:16x16")
    ap.add_argument("--m2-configs", type=parse_m2_config, nargs="+", metavar="DxL:BxT:NxP",
                    default=[parse_m2_config(c) for c in m2_default],
                    help=f"Mamba-2: ... : d_state x head_dim (default: {' '.join(m2_default)})")  # fmt: skip
    ap.add_argument("--arch", choices=("mamba", "mamba2", "all"), default="all", help="which section(s) to run")
    ap.add_argument("--m2-chunk", type=int, default=64, help="Mamba-2 chunk length, ours and transformers' alike")
    ap.add_argument("--vocab", type=int, default=32)
    ap.add_argument("--d-state", type=int, default=16, help="Mamba-1's d_state (Mamba-2's is in --m2-configs)")
    ap.add_argument("--expand", type=int, default=2)
    ap.add_argument("--d-conv", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the fused scan follows torch's count)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="what the times measure (see above)")
    ap.add_argument("--reps", type=int, default=3, help="timed runs per measurement (the best is reported)")
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--decode-batch", type=int, default=1)
    ap.add_argument("--no-hf", action="store_true", help="skip transformers")
    ap.add_argument("--no-reference", action="store_true", help="skip our PyTorch reference scan")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    tf = not args.no_hf
    if tf and importlib.util.find_spec("transformers") is None:
        print("transformers is not installed: skipping it (pip install transformers mambapy)")
        tf = False
    hf1 = tf and args.arch != "mamba2"  # Mamba-1 against transformers' mambapy path
    if hf1 and importlib.util.find_spec("mambapy") is None:
        print("mambapy is not installed, so transformers' Mamba would run a Python loop over time, not its mambapy"
              " path: skipping it in the mamba section (pip install mambapy)")  # fmt: skip
        hf1 = False
    hf2 = tf and args.arch != "mamba"  # Mamba-2 against transformers' PyTorch path
    kernels = [m for m in ("mamba_ssm", "causal_conv1d") if importlib.util.find_spec(m) is not None]
    if hf2 and kernels:
        print(f"{', '.join(kernels)} installed: transformers' Mamba2 would call its kernels, not its PyTorch path;"
              " skipping it in the mamba2 section")  # fmt: skip
        hf2 = False
    if not scan_cpu.available() and args.arch != "mamba2":
        print("numba is not installed: 'ours' runs the PyTorch reference scan (pip install numba)")
    hf_version = "no transformers"
    if tf:
        import transformers

        hf_version = f"transformers {transformers.__version__}"
    print(f"torch {torch.__version__}, {hf_version}, {args.threads} thread(s); train: fwd+bwd, best of {args.reps};"
          f" decode: batch {args.decode_batch}, {args.decode_tokens} tokens after a T-token prefill;"
          f" mamba2 chunk {args.m2_chunk}; {args.clock} clock\n")  # fmt: skip

    rows, ratios = [], []

    def run(name, makers, B, T):
        t0 = time.perf_counter()
        res = measure({label: make() for label, make in makers.items()}, args.vocab, B, T, args)
        for label, r in res.items():
            rows.append(f"{name:<25} {label:<10} {r['params']:>9,} {r['tok_s']:>12,.0f} {1e3 * r['step_s']:>9.1f}"
                        f" {r['decode_ms']:>14.3f}")  # fmt: skip
            print(rows[-1], flush=True)
        print(f"  ({time.perf_counter() - t0:.0f}s)", flush=True)
        r = res["ours"]
        for other in ("hf", "reference"):
            if other in res:
                o = res[other]
                decode = ("(decode runs the same step code in both)" if other == "reference"
                          else f"decode {o['decode_ms'] / r['decode_ms']:.2f}x faster per token")  # fmt: skip
                ratios.append(f"{name:<25} ours vs {other + ':':<11} train tokens/s"
                              f" x{r['tok_s'] / o['tok_s']:.2f}, {decode}")  # fmt: skip

    if args.arch in ("mamba", "all"):
        for d, L, B, T in args.configs:
            models = {"ours": lambda: Ours(args.vocab, d, L, args, scan="auto")}
            if not args.no_reference:
                models["reference"] = lambda: Ours(args.vocab, d, L, args, scan="torch")
            if hf1:
                models["hf"] = lambda: HF(args.vocab, d, L, args)
            run(f"mamba {d}x{L}:{B}x{T}", models, B, T)
    if args.arch in ("mamba2", "all"):
        for d, L, B, T, N, P in args.m2_configs:
            models = {"ours": lambda: Ours2(args.vocab, d, L, N, P, args)}
            if hf2:
                models["hf"] = lambda: HF2(args.vocab, d, L, N, P, args)
            run(f"mamba2 {d}x{L}:{B}x{T}:{N}x{P}", models, B, T)

    header = f"{'config':<25} {'model':<10} {'params':>9} {'train tok/s':>12} {'step ms':>9} {'decode ms/tok':>14}"
    print("\n" + header + "\n" + "-" * len(header) + "\n" + "\n".join(rows))
    print("\nratios (ours / theirs tokens per second; their decode ms / ours):\n" + "\n".join(ratios))


if __name__ == "__main__":
    main()
