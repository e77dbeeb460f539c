"""Activation checkpointing (`--grad-checkpoint`): activation memory and step time, with and without, side by side.

    python bench/grad_checkpoint.py --archs mamba pythia --d-model 256 --layers 8 --batch 8 --length 512

For each model: the bytes of activations the forward keeps for the backward (parameters excluded; counted through
autograd's saved-tensor hooks, so the count is exact and the same on every machine), and the median time of a
forward + backward, plain and checkpointed, alternated so that both see the same machine. On CUDA it also prints
the peak allocated memory. Prints the checkpointed / plain ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from toolssm.models import ModelConfig, build_model, resolve, set_grad_checkpoint


def kept_bytes(model, x) -> int:
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            kept[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(kept.values())


def step_time(model, x) -> float:
    if x.is_cuda:
        torch.cuda.synchronize()
    t = time.perf_counter()
    logits, _ = model(x)
    logits.float().square().mean().backward()
    model.zero_grad(set_to_none=True)
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t


def peak(model, x) -> float:
    torch.cuda.reset_peak_memory_stats()
    step_time(model, x)
    return torch.cuda.max_memory_allocated() / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--archs", nargs="+", default=["mamba", "mamba2", "pythia"])
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"{args.layers} layers of {args.d_model}, batch {args.batch} x {args.length} tokens, on {dev}")
    print(f"{'model':10s} {'kept MiB':>9s} {'ckpt':>7s} {'ratio':>6s} {'step s':>7s} {'ckpt':>7s} {'ratio':>6s}")
    for arch in args.archs:
        torch.manual_seed(0)
        kw = {**resolve(ModelConfig(arch=arch)), "d_model": args.d_model, "n_layers": args.layers}
        model = build_model(arch, 64, kw).to(dev)
        x = torch.randint(0, 64, (args.batch, args.length), device=dev)
        mem = []
        for on in (False, True):
            set_grad_checkpoint(model, on)
            mem.append(kept_bytes(model, x) / 2**20)
        times = {False: [], True: []}
        for _ in range(args.repeats + 1):  # the first round warms up; alternate so both see the same machine
            for on in (False, True):
                set_grad_checkpoint(model, on)
                times[on].append(step_time(model, x))
        t0, t1 = (statistics.median(times[on][1:]) for on in (False, True))
        line = f"{arch:10s} {mem[0]:9.1f} {mem[1]:7.1f} {mem[1] / mem[0]:6.3f} {t0:7.3f} {t1:7.3f} {t1 / t0:6.2f}"
        if dev.type == "cuda":
            p = [peak(set_grad_checkpoint(model, on), x) for on in (False, True)]
            line += f"   peak MiB {p[0]:.0f} -> {p[1]:.0f} ({p[1] / p[0]:.2f})"
        print(line, flush=True)


if __name__ == "__main__":
    main()
