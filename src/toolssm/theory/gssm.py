"""Theorem 2.1, shown empirically: without interaction a fixed-state model must fail once the task has more
likely answers than the model has states.

The theorem (paper §2, App. B.1): in the CoT-only and single-turn regimes the answer is a function of the
state U(x) just before the first output token (no outside information arrives after it), so a GSSM with
|S| states can put out at most |S| distinct answers with any confidence, and err_n ≥ 1 - α as soon as
supp_α(f(D_n)) > |S|.

This module computes both sides for n-digit addition:

- `addition_supp` is supp_α(f(D_n)) exactly, for the paper's D_n (two uniform n-digit numbers). The sum
  of two independent uniforms on N values is triangular, so the α-mass set is a window around the mode
  and its size has a closed form (solved with integer square roots, exact at any n).
- `state_bits` counts the bits of a model's recurrent state (numel × bits per float), so
  |S| ≤ 2^(bits·numel): the number of states the model can tell apart at its precision.
- `crossover` is the smallest n with supp_α > |S|: where the theorem starts to bite.

What the bound does and does not predict (docs/theory.md): it is *necessary* for failure at large n,
not a forecast of when failure starts. For the CPU LSTM (2 layers, d=96, fp32: 12,288 state bits) the
crossover is at 3,701 digits, while the paper's no-tool and single-turn ablations (App. D.7) fail just
past their 5 training digits. The bound is astronomically loose because a trained network uses a vanishing fraction of the
states its floats could hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import torch

from toolssm.models import SequenceModel
from toolssm.plots import save_figure


def _uniform_range(n: int) -> tuple[int, int]:
    """The paper's n-digit operands: uniform on [10^(n-1), 10^n - 1] (0..9 for n = 1, as the sampler)."""
    if n < 1:
        raise ValueError(f"bad n={n}: must be positive")
    return (0 if n == 1 else 10 ** (n - 1)), 10**n - 1


def _smallest(pred, guess: int, lo: int, hi: int) -> int:
    """The smallest j in [lo, hi] with pred(j) (pred monotone), searched outwards from ``guess``."""
    j = min(max(guess, lo), hi)
    while j > lo and pred(j - 1):
        j -= 1
    while not pred(j):
        j += 1
    return j


def triangular_supp(N: int, alpha: Fraction) -> int:
    """supp_α of the sum of two independent uniforms on N consecutive integers.

    P(mode ± d) = (N - d) / N². The top 2j+1 values hold ((2j+1)N - j(j+1)) / N²; adding one of the two
    values at distance j+1 gives 2j+2 values. We solve both quadratics with isqrt and take the smaller k."""
    if not 0 < alpha <= 1:
        raise ValueError(f"bad alpha={alpha}: need 0 < alpha <= 1")
    a, b = alpha.numerator, alpha.denominator
    need = a * N * N  # b * mass * N² >= a * N²

    def odd(j: int) -> bool:  # top 2j+1
        return b * ((2 * j + 1) * N - j * (j + 1)) >= need

    def even(j: int) -> bool:  # top 2j+2
        return b * ((2 * j + 1) * N - j * (j + 1) + N - j - 1) >= need

    # j^2 - (2N-1) j + (a N^2 / b - N) <= 0  ->  j >= ((2N-1) - sqrt((2N-1)^2 - 4(aN^2/b - N))) / 2
    disc = max(0, (2 * N - 1) ** 2 - (4 * (a * N * N - b * N)) // b)
    guess = ((2 * N - 1) - math.isqrt(disc)) // 2
    j_odd = _smallest(odd, guess, 0, N - 1)
    k = 2 * j_odd + 1
    if N >= 2 and even(N - 2):  # the top 2j+2 exist for j <= N-2 (the support has 2N-1 values)
        k = min(k, 2 * _smallest(even, max(0, guess - 1), 0, N - 2) + 2)
    return k


def addition_supp(n: int, alpha: float | Fraction) -> int:
    """supp_α(f(D_n)) for n-digit addition: the fewest distinct sums that carry probability α."""
    lo, hi = _uniform_range(n)
    return triangular_supp(hi - lo + 1, Fraction(alpha).limit_denominator(10**6))


def log10_int(k: int) -> float:
    """log10 of a positive integer of any size (math.log10 takes big ints exactly, without float overflow)."""
    return math.log10(k)


@torch.no_grad()
def state_numel(model: SequenceModel, device="cpu") -> int:
    """How many numbers a model's recurrent state holds per sequence (after one step; batch first)."""
    model.eval()
    _, state = model.step(torch.zeros(1, dtype=torch.long, device=device), None)
    return sum(t[0].numel() for t in state) if state is not None else 0


def state_bits(model: SequenceModel, bits_per_number: int = 32, device="cpu") -> int:
    """log2 of the number of states the model can distinguish at its precision: |S| ≤ 2^(this)."""
    return state_numel(model, device) * bits_per_number


def crossover(log2_states: int, alpha: float, n_max: int = 10**6) -> int:
    """The smallest n with supp_α(f(D_n)) > |S| = 2^log2_states: where Theorem 2.1 forces err ≥ 1 - α."""
    states = 1 << log2_states

    def past(n: int) -> bool:
        return addition_supp(n, alpha) > states

    hi = 1  # supp_α grows with n: gallop, then bisect (cheap: the big numbers stay near the answer's size)
    while not past(hi):
        if hi >= n_max:
            raise ValueError(f"the crossover is beyond n={n_max}")
        hi = min(2 * hi, n_max)
    lo = hi // 2 + 1 if hi > 1 else 1
    while lo < hi:
        mid = (lo + hi) // 2
        if past(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


@dataclass
class SuppRow:
    n: int
    supp: int
    log10_supp: float


def supp_table(ns, alpha: float) -> list[SuppRow]:
    rows = []
    for n in ns:
        s = addition_supp(n, alpha)
        rows.append(SuppRow(n, s, log10_int(s)))
    return rows


def plot_theorem21(curves: dict[str, list], bounds: dict[str, tuple[int, int]], path, **kw):
    """`theorem21_figure`, saved to ``path``; returns the path."""
    return save_figure(theorem21_figure(curves, bounds, **kw), path)


def theorem21_figure(
    curves: dict[str, list],
    bounds: dict[str, tuple[int, int]],
    *,
    alpha: float,
    train_size: int,
    n_max: int,
):
    """Two panels on one log n-axis. Top: measured answer exact match per model (``LengthResult`` lists),
    with α as a horizontal line. Bottom: log10 supp_α(f(D_n)) against log10 |S| per model on a linear axis
    (the counts overflow floats), a vertical line at each crossover. ``bounds[label] = (log2 |S|, crossover n)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7.2, 7.0), dpi=120, sharex=True)
    for k, (label, res) in enumerate(curves.items()):  # markers and dashes differ: equal curves stay visible
        res = sorted(res, key=lambda r: r.size)
        ax1.plot([r.size for r in res], [r.answer_acc for r in res], ("o-", "s--", "^-.", "v:")[k % 4],
                 ms=7 - 2 * (k % 3), label=f"{label}: answer EM")  # fmt: skip
    ax1.axhline(alpha, color="k", lw=0.8, ls=":", label=f"α = {alpha:g}")
    ax1.axvspan(1, train_size, color="grey", alpha=0.12, lw=0, label=f"training sizes (≤ {train_size})")
    ax1.set_ylabel("exact-match accuracy")
    ax1.set_ylim(-0.03, 1.03)
    ax1.set_title("Theorem 2.1 on n-digit addition: measured collapse vs. the state-count bound", fontsize=10)
    ax1.legend(fontsize=7, loc="upper right", framealpha=0.9)
    ax1.grid(True, which="both", alpha=0.3)

    ns = np.unique(np.geomspace(1, n_max, 200).astype(int))
    ax2.plot(ns, [log10_int(addition_supp(int(n), alpha)) for n in ns], "k-", label=f"log10 supp_α(f(D_n)), α={alpha:g}")
    for k, (label, (log2_s, n_star)) in enumerate(bounds.items()):
        color = f"C{k}"
        ax2.axhline(log2_s * math.log10(2), color=color, ls="--", lw=1, label=f"{label}: log10 |S| = {log2_s * math.log10(2):,.0f}")
        ax2.axvline(n_star, color=color, ls=":", lw=1)
        ax1.axvline(n_star, color=color, ls=":", lw=1)
        ax2.annotate(f"n*={n_star:,}", (n_star, log2_s * math.log10(2)), textcoords="offset points",
                     xytext=(-60, 8), fontsize=7, color=color)  # fmt: skip
    # log10 values on a linear axis: every tick is a decade count that means something (supp_α exceeds
    # the float range, so the counts themselves cannot go on a log axis)
    ax2.set_yscale("linear")
    ax2.set_ylim(bottom=0)
    ax2.set_xscale("log")
    ax2.set_xlim(0.8, n_max * 1.2)
    ax2.set_xlabel("operand digits n (log scale)")
    ax2.set_ylabel("log10 (count), linear axis")
    ax2.legend(fontsize=7, loc="upper left", framealpha=0.9)
    ax2.grid(True, which="both", alpha=0.3)
    return fig
