"""``toolssm theory``: run the paper's two theorems and print what they say (docs/theory.md).

Part 1, Theorem 2.2, per demonstration machine: Lemma B.1's n0 (estimated) and sample budget m, the
table learner trained on that many compiled traces, its errors at n0, 10·n0, 100·n0 (zero once coverage
holds), and two failures: training on D_1 alone, and forgetting one needed pair.

Part 2, Theorem 2.1, for n-digit addition: supp_α(f(D_n)) against the number of states the given models
can hold at their precision, next to those models' measured exact match. Models come from ``--checkpoints``
or, without them, from a quick training of small Mamba models on the CoT-only and single-turn ablations
(≤ 3 digits). A model's curve is shown only if it is at least ``--min-indist`` (95%) exact on problems drawn
as in training: an undertrained model fails at every size, so its "collapse" says nothing about length.

Part 3 (``--parts conjecture``), the paper's open conjecture: SGD on each machine's traces, for several
seeds, tested in distribution and at ``--conj-scale`` × the training length.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import torch

from toolssm.choices import choice
from toolssm.models import model_names
from toolssm.tasks.turing_machines import DEMOS, TableLearner, get_demo, run, state_token
from toolssm.theory import gssm
from toolssm.theory.turing import estimate_n0, evaluate_learner, sample_budget, training_traces


@dataclass
class TheoryConfig:
    """Run the paper's theory: Theorem 2.2 on Turing machines (table learner), Theorem 2.1 on addition."""

    out: str = "runs/theory"
    """where to write theory.txt, theory.json and the plots"""
    machines: tuple[str, ...] = tuple(DEMOS)
    """demonstration machines for Theorem 2.2"""
    eps: float = 0.1
    """Lemma B.1's ε (target error)"""
    delta: float = 0.1
    """Lemma B.1's δ (failure probability)"""
    n0: int = 0
    """training lengths 1..n0; 0: Lemma B.1's n0, estimated from visit frequencies"""
    n0_search: int = 12
    """largest length searched when estimating n0"""
    scales: tuple[int, ...] = (1, 10, 100)
    """test lengths as multiples of n0"""
    problems: int = 5
    """test problems per machine and length"""
    budget_cap: int = 0
    """cap on samples drawn per training length (0: Lemma B.1's m' exactly)"""
    alpha: float = 0.05
    """Theorem 2.1's coverage α: past the crossover, accuracy ≤ α"""
    bits: int = 32
    """bits per state number (32 for fp32, 16 for bf16)"""
    checkpoints: tuple[str, ...] = ()
    """trained addition models for Theorem 2.1, as LABEL=PATH or PATH (default: train quick ones)"""
    gssm_tasks: tuple[str, ...] = ("addition-reversed", "addition-calculator")
    """tasks to train quick models on when no checkpoints are given (CoT-only, single-turn)"""
    train_steps: int = 1500
    """training steps for each quick model; 0 skips the measured curves"""
    gssm_arch: Annotated[str, choice(model_names)] = "mamba"
    """architecture of the quick models (cpu preset)"""
    gssm_train_size: int = 3
    """operand digits the quick models train on (≤ N, as `train --train-size`)"""
    gssm_batch_size: int = 256
    """batch size of the quick models"""
    min_indist: float = 0.95
    """a model's collapse with length is shown only if its answer exact match on problems drawn as in training
    ('<=N', N its training size) is at least this; below it, the model is marked undertrained and not plotted"""
    indist_problems: int = 200
    """problems drawn as in training for that check"""
    sizes: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 20, 32)
    """operand digits at which the models are tested"""
    gssm_problems: int = 50
    """problems per size for the Theorem 2.1 models' evaluation"""
    parts: tuple[str, ...] = ("turing", "gssm")
    """which parts to run: turing (Theorem 2.2), gssm (Theorem 2.1), conjecture (SGD on the TM traces)"""
    conj_machines: tuple[str, ...] = tuple(DEMOS)
    """machines for the conjecture (tasks tm-<machine>)"""
    conj_seeds: tuple[int, ...] = (0, 1, 2)
    """training seeds of the conjecture's models (one run per machine and seed)"""
    conj_arch: Annotated[str, choice(model_names)] = "lstm"
    """architecture of the conjecture's models (cpu preset)"""
    conj_train_size: int = 6
    """the conjecture's models train on inputs of length ≤ this"""
    conj_steps: int = 600
    """training steps per conjecture run"""
    conj_batch_size: int = 16
    """batch size per conjecture run"""
    conj_scale: int = 10
    """length generalization is tested at conj_scale × conj_train_size"""
    conj_problems: int = 20
    """test problems per conjecture run and size (in distribution: drawn as in training)"""
    seed: int = 0
    """seed of the sampled problems and of the quick models' training"""
    progress: bool = False
    """show progress bars"""


def _validate(cfg: TheoryConfig) -> None:
    from toolssm.paths import check_out

    check_out(cfg.out)
    for m in cfg.machines:
        get_demo(m)
    if not (0 < cfg.eps < 1 and 0 < cfg.delta < 1 and 0 < cfg.alpha < 1):
        raise ValueError("eps, delta and alpha must lie strictly between 0 and 1")
    if cfg.n0 < 0 or cfg.n0_search < 1 or cfg.problems < 1 or cfg.gssm_problems < 1 or cfg.budget_cap < 0:
        raise ValueError("n0 >= 0; n0_search, problems and gssm_problems >= 1; budget_cap >= 0")
    if not cfg.scales or min(cfg.scales) < 1 or not cfg.sizes or min(cfg.sizes) < 1 or cfg.bits < 1:
        raise ValueError("scales, sizes and bits must be positive")
    if set(cfg.parts) - {"turing", "gssm", "conjecture"} or not cfg.parts:
        raise ValueError(f"bad parts {' '.join(cfg.parts)}: choose from turing, gssm, conjecture")
    if "turing" in cfg.parts and not cfg.machines:
        raise ValueError("no machines for Theorem 2.2: give --machines NAME [NAME ...]")
    if cfg.train_steps < 0:
        raise ValueError(f"bad train_steps={cfg.train_steps}: must be >= 0 (0: no measured curves)")
    if not 0 <= cfg.min_indist <= 1:
        raise ValueError(f"bad min_indist={cfg.min_indist}: an accuracy between 0 and 1")
    for name in ("gssm_train_size", "gssm_batch_size", "indist_problems", "conj_train_size", "conj_steps",
                 "conj_batch_size", "conj_scale", "conj_problems"):  # fmt: skip
        if getattr(cfg, name) < 1:
            raise ValueError(f"bad {name}={getattr(cfg, name)}: must be >= 1")
    from toolssm.models import ModelConfig, resolve

    resolve(ModelConfig(arch=cfg.gssm_arch))  # an unknown name: a one-line error
    if "conjecture" in cfg.parts:
        resolve(ModelConfig(arch=cfg.conj_arch))
        for m in cfg.conj_machines:
            get_demo(m)
        if not cfg.conj_machines or not cfg.conj_seeds:
            raise ValueError("the conjecture needs --conj-machines and --conj-seeds")
    if "gssm" in cfg.parts:  # checked before the Turing part runs, so a refusal leaves the folder as it was
        _check_addition(cfg)


def _check_addition(cfg: TheoryConfig) -> None:
    """Theorem 2.1 is about n-digit addition: its models must be of an addition task."""
    from toolssm.checkpoint import read_config
    from toolssm.tasks import get_task

    def addition(task: str) -> bool:
        return task.split("-")[0] == "addition"

    for c in cfg.checkpoints:
        path = c.rpartition("=")[2]
        task = str(read_config(path)[1].get("task"))
        if not addition(task):
            raise ValueError(f"checkpoint {path} is for task {task}: Theorem 2.1 is about n-digit addition, so it "
                             f"takes addition checkpoints (addition-reversed, addition-calculator, ...)")  # fmt: skip
    if not cfg.checkpoints and cfg.train_steps:
        for t in cfg.gssm_tasks:
            get_task(t)  # an unknown name: a one-line error
            if not addition(t):
                raise ValueError(f"bad --gssm-tasks {t}: Theorem 2.1 trains on addition tasks (addition-reversed, "
                                 f"addition-calculator, ...)")  # fmt: skip


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


# -- Theorem 2.2 ---------------------------------------------------------------------------------------------


def theorem22(cfg: TheoryConfig, say) -> tuple[dict, Path]:
    say("== Theorem 2.2: a table learner on Turing-machine traces length-generalizes (App. B.2, Lemma B.1) ==")
    say(f"   ε = {cfg.eps}, δ = {cfg.delta}; m' = M·log(M/δ)/ε samples from each of D_1..D_n0, M = |Q|·|Σ|\n")
    results, curves = {}, {}
    rows = [["machine", "|Q|", "|Σ|", "M", "n0", "m'", "m", "|Â|/transitions", "test n", "errors", "trace err", "TM steps"]]
    fails = [["machine", "learner", "missing pairs", "test n", "errors", "first missing pair"]]
    for name in cfg.machines:
        demo = get_demo(name)
        m = demo.machine
        n0 = cfg.n0 or estimate_n0(demo, cfg.eps, cfg.n0_search, seed=cfg.seed)[0]
        per, total = sample_budget(m.n_pairs, cfg.eps, cfg.delta, n0)
        drawn = min(per, cfg.budget_cap) if cfg.budget_cap else per
        t0 = time.perf_counter()
        learner = TableLearner().fit(training_traces(demo, n0, drawn, seed=cfg.seed))
        lengths = [n0 * s for s in cfg.scales]
        errs = [evaluate_learner(learner, demo, n, cfg.problems, seed=cfg.seed) for n in lengths]
        for k, e in enumerate(errs):
            rows.append([name if k == 0 else "", *(
                [str(len(m.states)), str(len(m.symbols) + 1), str(m.n_pairs), str(n0), f"{drawn:,}", f"{drawn * n0:,}",
                 f"{len(learner.table)}/{len(m.delta)}"] if k == 0 else [""] * 7),
                str(e.n), f"{e.errors}/{e.problems}", f"{e.trace_errors}/{e.problems}", f"{e.steps:,}"])  # fmt: skip
        # failure 1: too little coverage (train on D_1 only); failure 2: forget the pair most used at test
        weak = TableLearner().fit(training_traces(demo, 1, drawn, seed=cfg.seed))
        missing = sorted(set(learner.table) - set(weak.table))
        e_weak = evaluate_learner(weak, demo, lengths[-1], cfg.problems, seed=cfg.seed)
        x = demo.sample(random.Random(f"pick:{cfg.seed}"), lengths[-1])
        visits = {(state_token(q), "[EOS]" if s == "_" else s) for q, s in run(m, x).visited}
        pair = min(visits & set(learner.table))
        holed = TableLearner().fit(training_traces(demo, n0, drawn, seed=cfg.seed))
        holed.forget(pair)
        e_hole = evaluate_learner(holed, demo, lengths[-1], cfg.problems, seed=cfg.seed)
        fails.append([name, "trained on D_1 only", str(len(missing)), str(e_weak.n), f"{e_weak.errors}/{e_weak.problems}",
                      " ".join(missing[0]) if missing else "-"])  # fmt: skip
        fails.append(["", "n0 with one pair forgotten", "1", str(e_hole.n), f"{e_hole.errors}/{e_hole.problems}", " ".join(pair)])
        # the error at the largest test length as a function of the training lengths 1..t
        curve = []
        for t in range(1, n0 + 1):
            h = TableLearner().fit(training_traces(demo, t, drawn, seed=cfg.seed))
            curve.append((t, evaluate_learner(h, demo, lengths[-1], cfg.problems, seed=cfg.seed).errors / cfg.problems))
        curves[name] = (curve, lengths[-1])
        results[name] = {
            "states": len(m.states), "symbols": len(m.symbols) + 1, "M": m.n_pairs, "n0": n0, "per_length": per,
            "drawn_per_length": drawn, "m": total, "covered": len(learner.table), "transitions": len(m.delta),
            "errors": [asdict(e) for e in errs], "trained_on_D1": asdict(e_weak), "missing_on_D1": len(missing),
            "forgot": list(pair), "forgot_errors": asdict(e_hole), "error_vs_training_length": curve,
            "seconds": round(time.perf_counter() - t0, 2),
        }  # fmt: skip
    say(_table(rows))
    say("\n   |Â|/transitions: pairs the learner holds / transitions of the machine. errors: wrong answers;"
        " trace err: trajectories that differ from F(x).\n")  # fmt: skip
    say("   Coverage is the whole story. Remove it and the same learner fails:")
    say(_table(fails))
    png = _plot_turing(curves, Path(cfg.out) / "turing.png")
    return results, png


def _plot_turing(curves: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for name, (curve, n_test) in curves.items():
        ax.plot([t for t, _ in curve], [e for _, e in curve], "o-", label=f"{name} (tested at n = {n_test:,})")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("training lengths 1..n0 (Lemma B.1 samples per length)")
    ax.set_ylabel("error rate at the largest test length")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title("Theorem 2.2: the table learner is exact once coverage holds", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    from toolssm.plots import save_figure

    return save_figure(fig, path)


# -- Theorem 2.1 ---------------------------------------------------------------------------------------------


def _models(cfg: TheoryConfig, say) -> dict[str, Path]:
    """Label -> checkpoint, from --checkpoints or quick trainings."""
    if cfg.checkpoints:
        out = {}
        for c in cfg.checkpoints:
            label, _, path = c.rpartition("=")
            out[label or Path(path).name] = Path(path)
        return out
    if cfg.train_steps <= 0:
        return {}
    from toolssm.models import ModelConfig
    from toolssm.train import TrainConfig, train

    out = {}
    for task in cfg.gssm_tasks:
        run_dir = Path(cfg.out) / "gssm" / task
        t0 = time.perf_counter()
        tc = TrainConfig(task=task, model=ModelConfig(arch=cfg.gssm_arch), train_size=cfg.gssm_train_size,
                         steps=cfg.train_steps, batch_size=cfg.gssm_batch_size, out=str(run_dir), seed=cfg.seed,
                         progress=cfg.progress, threads=1, save_every=min(500, cfg.train_steps), device="cpu",
                         resume=True)  # fmt: skip
        # resume: a rerun finds its models trained; other --train-steps or --seed are refused, naming them
        out[task] = train(tc)
        say(f"   trained {cfg.gssm_arch} on {task} (≤ {cfg.gssm_train_size} digits, {cfg.train_steps} steps of "
            f"{cfg.gssm_batch_size}) in {time.perf_counter() - t0:.0f}s")  # fmt: skip
    return out


def in_distribution_gate(acc: float, n: int, train_size: int, min_acc: float) -> str | None:
    """None when a model's answer exact match on problems drawn as in training passes ``min_acc``; else why its
    curve says nothing about length (an undertrained model fails at every size, not past its training size)."""
    if acc >= min_acc:
        return None
    return (f"undertrained: {acc:.1%} exact on {n} problems drawn as in training (≤ {train_size} digits), "
            f"below {min_acc:.0%}; its collapse with length is not shown")  # fmt: skip


def theorem21(cfg: TheoryConfig, say) -> tuple[dict, Path]:
    from toolssm.checkpoint import load_trained
    from toolssm.evaluate import evaluate
    from toolssm.plots import format_comparison

    say("== Theorem 2.1: without interaction, a GSSM fails once supp_α(f(D_n)) exceeds its state count ==")
    say(f"   n-digit addition, D_n = two uniform n-digit numbers, α = {cfg.alpha}\n")
    ns = sorted({*cfg.sizes, 5, 10, 100, 1000, 10000})
    supp = gssm.supp_table(ns, cfg.alpha)
    say(_table([["n", "supp_α(f(D_n))", "log10"]] + [[str(r.n), str(r.supp) if r.supp < 10**12 else f"~10^{r.log10_supp:.1f}",
                                                      f"{r.log10_supp:.2f}"] for r in supp]))  # fmt: skip
    torch.set_num_threads(1)
    curves, bounds, info, refused = {}, {}, {}, {}
    train_size = cfg.gssm_train_size
    for label, path in _models(cfg, say).items():
        loaded, task = load_trained(path, "cpu")
        train_size = int(loaded.config.get("train", {}).get("train_size", 5))
        log2_s = gssm.state_bits(loaded.model, cfg.bits)
        n_star = gssm.crossover(log2_s, cfg.alpha)
        regime = task.demonstrate(task.sample(random.Random(0), 3)).regime().value
        name = f"{label} ({loaded.arch}, {regime})"
        bounds[name] = (log2_s, n_star)
        # first the gate: is the model right on problems drawn as in training? only then is a collapse with
        # length evidence of anything
        (ind,) = evaluate(loaded.model, task, loaded.vocab, [f"<={train_size}"], n_problems=cfg.indist_problems,
                          seed=4321, with_token_acc=False, progress=cfg.progress)  # fmt: skip
        why = in_distribution_gate(ind.answer_acc, ind.n, train_size, cfg.min_indist)
        d = {"checkpoint": str(path), "task": loaded.task, "regime": regime, "train_size": train_size,
             "in_distribution": ind.answer_acc, "in_distribution_n": ind.n, "state_numbers": log2_s // cfg.bits,
             "log2_states": log2_s, "log10_states": log2_s * math.log10(2), "crossover_n": n_star}  # fmt: skip
        info[name] = d
        say(f"   {name}: {ind.answer_acc:.1%} exact on {ind.n} problems drawn as in training (≤ {train_size} digits)"
            + (f"  REFUSED: {why}" if why else ""))  # fmt: skip
        if why:
            refused[name] = d["refused"] = why
            continue
        res = evaluate(loaded.model, task, loaded.vocab, [str(n) for n in cfg.sizes], n_problems=cfg.gssm_problems,
                       seed=1234, with_token_acc=False, progress=cfg.progress)  # fmt: skip
        curves[name] = res
        d["first_n_at_or_below_alpha"] = next((r.size for r in res if r.size > train_size and r.answer_acc <= cfg.alpha), None)
        d["results"] = [asdict(r) for r in res]
    if curves:
        say("\n" + format_comparison(curves, train_size=train_size))
    if info:
        rows = [["model", "in distribution", "state numbers", "log10 |S|", "bound: fails from n*", "measured: acc ≤ α from n"]]
        for name, d in info.items():
            measured = ("refused: undertrained" if "refused" in d else
                        str(d["first_n_at_or_below_alpha"] or "not within the tested sizes"))  # fmt: skip
            rows.append([name, f"{d['in_distribution']:.1%} (≤ {d['train_size']})", f"{d['state_numbers']:,}",
                         f"{d['log10_states']:,.0f}", f"{d['crossover_n']:,}", measured])  # fmt: skip
        say("\n" + _table(rows))
    say(
        "\n   What the bound predicts: past n*, no model with that state (any weights) can be right more than α of\n"
        "   the time in the CoT-only or single-turn regime. What it does not predict: when trained models actually\n"
        f"   fail. |S| ≤ 2^({cfg.bits}·numbers) counts every float pattern; trained networks use a vanishing fraction\n"
        "   of them; the paper's ablations (App. D.7) fail just past their training length, thousands of digits\n"
        f"   before n*. A model below {cfg.min_indist:.0%} on problems drawn as in training is not plotted: it fails\n"
        "   everywhere, so its curve says nothing about length."
    )
    n_max = max([*cfg.sizes, *(n for _, n in bounds.values())]) * 3 if bounds else 10**4
    png = gssm.plot_theorem21(curves, bounds, Path(cfg.out) / "theorem21.png", alpha=cfg.alpha,
                              train_size=train_size, n_max=n_max)  # fmt: skip
    return {"alpha": cfg.alpha, "min_in_distribution": cfg.min_indist, "refused": refused,
            "supp": [{"n": r.n, "log10_supp": r.log10_supp, "supp": str(r.supp) if r.supp < 10**300 else None} for r in supp],
            "models": info}, png  # fmt: skip


# -- the conjecture: gradient descent on the same traces ------------------------------------------------------


def conjecture(cfg: TheoryConfig, say) -> dict:
    """Train a model by SGD on each machine's compiled traces (tasks tm-<machine>), for each seed, and test it
    on problems drawn as in training and at conj_scale × the training length."""
    from toolssm.checkpoint import load_checkpoint
    from toolssm.evaluate import evaluate
    from toolssm.models import ModelConfig
    from toolssm.tasks import get_task
    from toolssm.train import TrainConfig, train

    n, long = cfg.conj_train_size, cfg.conj_scale * cfg.conj_train_size
    say("== The conjecture: gradient descent on the Turing-machine traces (the paper's footnote) ==")
    say(f"   {cfg.conj_arch} (cpu preset), {cfg.conj_steps} steps of {cfg.conj_batch_size}, trained on lengths ≤ {n};"
        f" answer exact match on {cfg.conj_problems} problems drawn as in training and at n = {long}\n")  # fmt: skip
    torch.set_num_threads(1)
    rows = [["machine", "seed", f"≤ {n} (in distribution)", f"n = {long}", "train s", "eval s",
             "table learner: pairs seen", f"its errors at n = {long}"]]  # fmt: skip
    table = []
    for machine in cfg.conj_machines:
        task, demo = get_task(f"tm-{machine}"), get_demo(machine)
        # Theorem 2.2's learner on as many draws as one SGD run sees: does the training size cover the machine?
        draws = -(-cfg.conj_steps * cfg.conj_batch_size // n)
        learner = TableLearner().fit(training_traces(demo, n, draws, seed=cfg.seed))
        e_table = evaluate_learner(learner, demo, long, cfg.conj_problems, seed=cfg.seed)
        seen = f"{len(learner.table)}/{len(demo.machine.delta)}"
        for seed in cfg.conj_seeds:
            t0 = time.perf_counter()
            tc = TrainConfig(task=task.name, model=ModelConfig(arch=cfg.conj_arch), train_size=n, steps=cfg.conj_steps,
                             batch_size=cfg.conj_batch_size, seed=seed, out=str(Path(cfg.out) / "conjecture" / f"{machine}-s{seed}"),
                             progress=cfg.progress, threads=1, save_every=cfg.conj_steps, device="cpu", resume=True)  # fmt: skip
            path = train(tc)
            t1 = time.perf_counter()
            loaded = load_checkpoint(path, "cpu")
            ind, gen = evaluate(loaded.model, task, loaded.vocab, [f"<={n}", str(long)], n_problems=cfg.conj_problems,
                                seed=4321, with_token_acc=False, progress=cfg.progress)  # fmt: skip
            t2 = time.perf_counter()
            r = {"machine": machine, "seed": seed, "train_size": n, "test_n": long, "in_distribution": ind.answer_acc,
                 "length_generalization": gen.answer_acc, "problems": cfg.conj_problems,
                 "train_seconds": round(t1 - t0, 1), "eval_seconds": round(t2 - t1, 1), "table_pairs_seen": seen,
                 "table_errors": e_table.errors}  # fmt: skip
            table.append(r)
            rows.append([machine, str(seed), f"{ind.answer_acc:.0%}", f"{gen.answer_acc:.0%}", f"{t1 - t0:.0f}",
                         f"{t2 - t1:.0f}", seen, f"{e_table.errors}/{e_table.problems}"])  # fmt: skip
            say(" | ".join(rows[-1]))  # as it finishes; the table follows
    say("\n" + _table(rows))
    say("\n   train s: about 0 for a run found finished in its folder (a rerun resumes it). The table learner is\n"
        "   Theorem 2.2's, fitted on as many draws from D_1..D_n as one SGD run sees: where it has not seen every\n"
        "   transition, no learner is owed length generalization.")
    return {"arch": cfg.conj_arch, "steps": cfg.conj_steps, "batch_size": cfg.conj_batch_size, "train_size": n,
            "test_n": long, "runs": table}  # fmt: skip


def run_theory(cfg: TheoryConfig) -> int:
    _validate(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def say(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    t0 = time.perf_counter()
    report, pngs = {}, []
    if "turing" in cfg.parts:
        report["theorem_2_2"], png = theorem22(cfg, say)
        pngs.append(png)
        say()
    if "gssm" in cfg.parts:
        report["theorem_2_1"], png = theorem21(cfg, say)
        pngs.append(png)
        say()
    if "conjecture" in cfg.parts:
        report["conjecture"] = conjecture(cfg, say)
    (out / "theory.txt").write_text("\n".join(lines) + "\n")
    (out / "theory.json").write_text(json.dumps(report, indent=2))
    print(f"\nwrote {', '.join(map(str, [out / 'theory.txt', out / 'theory.json', *pngs]))} "
          f"in {time.perf_counter() - t0:.0f}s")  # fmt: skip
    return 0
