"""Refuse, before any allocation, a size, batch or step count that cannot finish on this machine.

The bound is on memory, not on size: an evaluation of 1,000,000-digit addition is a goal, one of 10**9 digits
is not. `expert_tokens` estimates a problem's tokens at a size without drawing a problem of that size: its
input or a quarter of the task's own ``token_budget`` (which allows 2 to 3.5 times the expert's length), at
small plain sizes 1, 2, 4, ... until a problem reaches `PROBE_TOKENS` tokens or the size itself; beyond, it
extrapolates with the smaller growth exponent of the last two doublings, and never below the input's linear
growth (linear tasks stay linear; Hanoi's exponential growth is underestimated, so the estimate errs on the
side of running).

The memory compared is a *floor*, what the command certainly holds at once, so a refusal is never wrong:

- evaluation: every problem of a batch in flight keeps its expert trajectory (token and role lists, 16 bytes a
  token) and the reference ids it is compared against (8 bytes a token): `EVAL_BYTES_PER_TOKEN`; and all the
  problems of a size are drawn before the first batch, each at least a Python object (`PROBLEM_BYTES`);
- training: every trajectory of the rank's share of the batch in Python lists (24 bytes a token), the padded
  token and mask tensors (9), the logits and their gradient (2 x 4 bytes x vocabulary size) and each layer's
  output (4 bytes x d_model x n_layers); on CUDA the last two are compared with the GPU's free memory. It is
  checked when training starts (the device known), not in ``TrainConfig.validate``, so a sweep planned for
  bigger machines (``reproduce --scale paper``) still validates on a laptop.

It is compared with the memory available now (``MemAvailable`` in /proc/meminfo, or the cgroup's limit when
lower). What passes may still run out of memory later; that ends in the CLI's one-line out-of-memory error.

Step counts (``steps``, ``save_every``, ``log_every``, ``warmup``) are at most `MAX_STEPS` = 2**53: past it a
step number is no longer exact in float64, which the learning-rate schedule and the logs compute with, and no
machine would reach it.
"""

from __future__ import annotations

import math
import random
import statistics
from pathlib import Path

from toolssm.tasks.base import Task

PROBE_TOKENS = 50_000
EVAL_BYTES_PER_TOKEN = 24
PROBLEM_BYTES = 64
MAX_STEPS = 2**53


def available_memory() -> int | None:
    """Bytes this process could still allocate: MemAvailable, or the cgroup's remaining limit when lower;
    None where neither can be read (not Linux)."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):  # fmt: skip
        try:
            cap, used = Path(limit).read_text().strip(), int(Path(usage).read_text())
            if cap.isdigit() and int(cap) < 2**60:  # "max" or a huge number: no limit
                found.append(max(0, int(cap) - used))
        except (OSError, ValueError):
            continue
    return min(found) if found else None


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.0f} MiB"


def expert_tokens(task: Task, size: int) -> float | None:
    """At least how many tokens a problem of ``size`` (plain size spec) takes: its input (in the context or in
    the tool's memory), or the expert's trajectory (a quarter of the task's ``token_budget``, which allows 2 to
    3.5 times the expert's length), whichever is more; None where
    the task cannot be probed (e.g. it needs a tokenizer). Each probe is the median of three draws, and the
    growth exponent the smaller of the last two doublings', so one lucky draw (a palindrome machine that
    rejects at the first symbol) does not set it."""
    rng = random.Random(0)

    def probe(k: int) -> tuple[float, float] | None:
        """(input tokens, all tokens): the medians over three draws at size k."""
        try:
            problems = [task.sample_eval(rng, str(k)) for _ in range(3)]
        except ValueError:  # not a size this task has (a graph needs some nodes), or no tokenizer
            return None
        inputs = [len(task.input_tokens(q)) for q in problems]
        tokens = [max(n, task.token_budget(q) / 4) for n, q in zip(inputs, problems)]
        return statistics.median(inputs), statistics.median(tokens)

    k, points = 1, []
    while k < size:
        got = probe(k)
        if got is not None:
            points.append((k, *got))
            if got[1] >= PROBE_TOKENS:
                break
        k *= 2
    else:
        got = probe(size)  # small enough to ask at the size itself
        return None if got is None else got[1]
    if not points:
        return None
    k, n_in, t = points[-1]
    slopes = [math.log(b[2] / a[2]) / math.log(b[0] / a[0]) for a, b in zip(points[-3:], points[-2:])
              if a[2] > 0 and b[2] > 0]  # fmt: skip
    p = max(0.0, min(slopes)) if slopes else 1.0  # no earlier point to measure growth on: linear
    return max(t * (size / k) ** p, n_in * size / k)  # the input grows in proportion to the size, at least


def _size_floor(task: Task, spec: str) -> int:
    """The size whose trajectory length is a floor for a spec's problems: a '<=N' draw or a compound spec
    (N1+N2, NxK) counts half its size."""
    n = task.spec_size(spec)
    return n if spec.isdigit() else max(1, n // 2)


def _refuse(need: float, what: str, fix: str) -> None:
    have = available_memory()
    if have is not None and need > have:
        raise ValueError(f"{what} needs at least {_gib(need)} of memory, {_gib(have)} is available: {fix}")


def check_eval_memory(task: Task, specs, *, n_problems: int, batch_size: int, procs: int = 1) -> None:
    """A one-line refusal of an evaluation whose batches cannot fit in memory (see the module's floor)."""
    in_flight = min(n_problems, batch_size * max(1, procs))
    for spec in specs:
        tokens = expert_tokens(task, _size_floor(task, spec))
        if tokens is None:
            continue
        need = in_flight * tokens * EVAL_BYTES_PER_TOKEN + n_problems * PROBLEM_BYTES
        _refuse(need, f"evaluating {task.name} at size {spec} ({n_problems:,} problems, {in_flight:,} at once, about "
                      f"{tokens:,.0f} tokens each)", "test smaller sizes, fewer problems, or fewer at once "
                      "(--batch-size)")  # fmt: skip


def check_steps(**counts: int) -> None:
    for name, n in counts.items():
        if n > MAX_STEPS:
            raise ValueError(f"bad {name}={n}: at most 2**53 ({MAX_STEPS:,}), where step numbers stop being exact")


def check_train_memory(task: Task, *, train_size: int, batch_size: int, vocab_size: int, model_kwargs: dict,
                       max_len: int = 0, world: int = 1, device=None) -> None:
    """A one-line refusal of a training batch that cannot fit in memory (see the module's floor). Each of the
    ``world`` ranks demonstrates its share of the batch; on a CUDA ``device`` the model's part (logits, layer
    outputs) is compared with the GPU's free memory, the trajectories with the host's."""
    size = max(1, train_size // 2)  # sizes up to train_size are drawn: half as a floor
    tokens = expert_tokens(task, size)
    if tokens is None:
        return
    tokens = min(tokens, max_len) if max_len else tokens
    mine = batch_size // max(1, world)
    width = int(model_kwargs.get("d_model") or 0) * int(model_kwargs.get("n_layers") or 1)
    host = batch_size * PROBLEM_BYTES + mine * tokens * (24 + 9)
    model = mine * tokens * (2 * 4 * vocab_size + 4 * width)
    what = f"a training batch of {batch_size:,} {task.name} trajectories (about {tokens:,.0f} tokens each at size " \
           f"{size})"
    fix = "use a smaller --batch-size or --train-size"
    if device is not None and getattr(device, "type", "cpu") == "cuda":
        import torch

        free = torch.cuda.mem_get_info(device)[0]
        if model > free:
            raise ValueError(f"{what} needs at least {_gib(model)} of GPU memory, {_gib(free)} is free: {fix}")
        model = 0
    _refuse(host + model, what, fix)
