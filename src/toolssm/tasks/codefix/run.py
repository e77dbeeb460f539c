"""Collect code-fixing trajectories, and evaluate a checkpoint's pass rate against codebase size.

    python -m toolssm.tasks.codefix.run collect --out runs/codefix/data --count 300
    toolssm train --task codefix --data runs/codefix/data/interactive.jsonl --out runs/codefix/inter
    toolssm train --task codefix-single --data runs/codefix/data/single-turn.jsonl --out runs/codefix/single
    python -m toolssm.tasks.codefix.run eval --checkpoints runs/codefix/inter runs/codefix/single

``collect`` runs both hard-coded agents in the sandbox on codebases of 4..16 functions, keeps the
verified records as JSONL (mini-SWE-agent messages), and trains one byte-level BPE tokenizer on all of
them (``tokenizer.json`` beside the files). ``eval`` decodes with the tool in the loop, through the real
sandbox, past the training length, and judges each workspace with the verifier: the pass rate is
``answer EM``; ``traj. EM`` is whether the whole trajectory equals the expert's.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import tyro
from tqdm.auto import tqdm

from toolssm.checkpoint import load_checkpoint
from toolssm.evaluate import LengthResult, save_results
from toolssm.plots import format_comparison, format_table, plot_curves
from toolssm.rollout import rollout
from toolssm.tasks import get_task
from toolssm.tasks.codefix.task import Codefix
from toolssm.tasks.codefix.trajectory import collect, read_records, texts
from toolssm.tokenizer import Bpe


def evaluate_codefix(
    model, task: Codefix, vocab, specs, *, n_problems: int = 10, seed: int = 1234, batch_size: int = 10,
    device="cpu", references: bool = True, progress: bool = True,
) -> list[LengthResult]:  # fmt: skip
    out = []
    for spec in specs:
        size = task.parse_spec(spec)
        rng = random.Random(f"eval:{seed}:{spec}")
        problems = [task.sample_eval(rng, spec) for _ in range(n_problems)]
        t0 = time.perf_counter()
        n_fix = n_traj = n_trunc = n_tok = n_clean = 0
        for b in range(0, n_problems, batch_size):
            batch = problems[b : b + batch_size]
            refs = [vocab.ids(task.demonstrate(p).tokens) for p in batch] if references else None
            episodes = [task.episode(p, max_tokens=task.token_budget(p)) for p in batch]
            try:
                results = rollout(model, vocab, episodes, references=refs, device=device)
                for p, ep, r in zip(batch, episodes, results):
                    v = task.verify_files(p, ep.tool.files())  # type: ignore[union-attr]
                    n_fix += v.fixed
                    n_clean += v.clean
                    n_traj += bool(r.trajectory_match)
                    n_trunc += r.truncated
                    n_tok += r.n_tokens
            finally:
                for ep in episodes:
                    ep.tool.close()  # type: ignore[union-attr]
        res = LengthResult(
            spec=spec, size=size, n=n_problems, answer_acc=n_fix / n_problems, trajectory_acc=n_traj / n_problems,
            token_acc=None, truncated=n_trunc, tokens_per_problem=n_tok / n_problems,
            seconds=time.perf_counter() - t0,
        )  # fmt: skip
        if progress:
            print(
                f"  {size:>3} functions: pass {res.answer_acc:6.1%}  (clean {n_clean}/{n_problems}) trajectory"
                f" {res.trajectory_acc:6.1%}  {res.tokens_per_problem:,.0f} tokens  {res.seconds:.1f}s",
                flush=True,
            )
        out.append(res)
    return out


@dataclass
class Collect:
    """Run both hard-coded agents; write <agent>.jsonl and tokenizer.json."""

    out: str = "runs/codefix/data"
    count: int = 300
    """trajectories per agent"""
    min_size: int = 4
    max_size: int = 16
    vocab_size: int = 1024
    seed: int = 0


@dataclass
class Tokenizer:
    """(Re)train the BPE tokenizer on every record in a data folder's JSONL files."""

    data: str = "runs/codefix/data"
    vocab_size: int = 1024


@dataclass
class Eval:
    """Pass rate against codebase size for one or more checkpoints; one table and one plot."""

    checkpoints: tuple[str, ...] = ()
    sizes: tuple[str, ...] = ("4", "8", "12", "16", "24", "32")
    n_problems: int = 10
    seed: int = 1234
    out: str = "runs/codefix/eval"
    references: bool = True
    """also run the expert on each problem, for whole-trajectory exact match"""
    labels: tuple[str, ...] = field(default_factory=tuple)


def run_collect(cfg: Collect) -> None:
    out = Path(cfg.out)
    sizes = range(cfg.min_size, cfg.max_size + 1)
    out.mkdir(parents=True, exist_ok=True)
    every = []
    for agent in ("single-turn", "interactive"):
        t0 = time.perf_counter()
        path = out / f"{agent}.jsonl"
        n_ok = 0
        with path.open("w") as f:  # one line per episode as it ends: a stopped run keeps what it has
            for i in tqdm(range(cfg.count), desc=agent, dynamic_ncols=True):
                [r] = collect(agent, sizes, 1, seed=f"{cfg.seed}:{i}")
                if r["info"]["codefix"]["fixed"]:
                    f.write(json.dumps(r) + "\n")
                    f.flush()
                    every.append(r)
                    n_ok += 1
        print(f"{agent}: {n_ok}/{cfg.count} fixed, {time.perf_counter() - t0:.0f}s -> {path}")
    Bpe.train(texts(every), cfg.vocab_size).save(out)
    print(f"tokenizer -> {out / 'tokenizer.json'}")


def _trained_size(train_cfg: dict, default: int) -> int:
    """The largest codebase the checkpoint trained on: the largest ``n`` in its stored trajectories when
    they are at hand (``train_size`` plays no part in training from data), else the config's ``train_size``."""
    data = train_cfg.get("data")
    if data and Path(data).exists():
        sizes = [r.get("info", {}).get("codefix", {}).get("n") for r in read_records(data)]
        if sizes := [n for n in sizes if isinstance(n, int)]:
            return max(sizes)
    return int(train_cfg.get("train_size", default))


def run_eval(cfg: Eval) -> None:
    torch.set_num_threads(1)
    curves: dict[str, list[LengthResult]] = {}
    train_size = 16
    for i, path in enumerate(cfg.checkpoints):
        loaded = load_checkpoint(path)
        task = get_task(loaded.task)
        task.load_assets(loaded.path)
        train_size = _trained_size(loaded.config.get("train", {}), train_size)
        label = cfg.labels[i] if i < len(cfg.labels) else f"{loaded.arch} {loaded.task}"
        print(f"{label} ({path})")
        res = evaluate_codefix(
            loaded.model, task, loaded.vocab, cfg.sizes, n_problems=cfg.n_problems, seed=cfg.seed,
            references=cfg.references,
        )  # fmt: skip
        curves[label] = res
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        save_results(
            res,
            out / f"results-{i}.json",
            task=loaded.task,
            label=label,
            checkpoint=str(loaded.path),
            seeds={"eval_seed": cfg.seed},
        )
        print(format_table(res, train_size=train_size, label=label))
    out = Path(cfg.out)
    table = format_comparison(curves, train_size=train_size)
    (out / "table.md").write_text(table + "\n")
    plot_curves(
        curves,
        out / "pass_rate.png",
        train_size=train_size,
        title="code fixing: pass rate vs functions",
        ylabel="pass rate",
    )
    print(table)
    print(f"wrote {out / 'table.md'} and {out / 'pass_rate.png'}")


def main(argv: list[str] | None = None) -> None:
    cfg = tyro.extras.subcommand_cli_from_dict({"collect": Collect, "tokenizer": Tokenizer, "eval": Eval}, args=argv)
    if isinstance(cfg, Collect):
        run_collect(cfg)
    elif isinstance(cfg, Tokenizer):
        records = [r for p in sorted(Path(cfg.data).glob("*.jsonl")) for r in read_records(p)]
        print(f"tokenizer on {len(records)} records -> {Bpe.train(texts(records), cfg.vocab_size).save(cfg.data)}")
    else:
        run_eval(cfg)


if __name__ == "__main__":
    main()
