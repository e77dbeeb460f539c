"""Code fixing as a `Task`: ``codefix`` (interactive agent) and ``codefix-single`` (single-turn agent).

The problem is a generated codebase; it lives only in the tool (a sandboxed shell over a throwaway copy),
and the model's context starts with a fixed instruction. Tokens are byte-level BPE pieces (`Bpe`), trained
on collected trajectories (`make_data`, `load_data`) or a pretrained checkpoint's own (`adopt_tokenizer`), and
saved with the model (`assets`, `load_assets`). What is graded is the workspace the episode's shell ends with:
``verify(problem, episode)`` reads it from ``episode.tool``, so evaluation, ``toolssm solve`` and sweeps grade
code fixing through the same call as every other task.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from toolssm.protocol import EOS, SPECIALS, Episode, Trajectory, Vocab
from toolssm.tasks.base import Task, register
from toolssm.tasks.codefix.agents import SUBMIT, make_agent
from toolssm.tasks.codefix.codebase import Codebase, generate
from toolssm.tasks.codefix.trajectory import (
    ENV,
    SYSTEM,
    TASK,
    collect,
    paper_filter,
    read_records,
    texts,
    to_trajectory,
)
from toolssm.tasks.codefix.verify import LIMITS, CodefixVerdict, verify
from toolssm.tokenizer import FILE, Bpe
from toolssm.tools.shell import BASH, END_BASH, ShellTool

MIN_SIZE = 4
#: pieces of the BPE `make_data` trains (docs/tasks/codefix.md, "Tokenizer")
BPE_SIZE = 1024
_SPEC = re.compile(r"^(\d+)(?::(\d+))?$")


@register
class Codefix(Task):
    name = "codefix"
    agent = "interactive"
    replay_spec = "32"  # twice the largest training codebase
    symbols = ()
    #: apply the paper's selection to training data (fixed, and shorter than average for the size)
    filter_data = False

    def __init__(self, bpe: Bpe | None = None):
        self.bpe = bpe

    # -- the tokenizer ------------------------------------------------------------------------------
    def _need_bpe(self) -> Bpe:
        if self.bpe is None:
            raise ValueError(
                f"task {self.name} needs a BPE tokenizer: train with --data (a trajectory file with {FILE} next to "
                "it), or load a checkpoint that has one"
            )
        return self.bpe

    def vocab(self) -> Vocab:
        bpe = self._need_bpe()
        bpe.check_disjoint([*SPECIALS, *ShellTool.tokens])
        return Vocab.build(bpe.pieces, ShellTool.tokens)

    def assets(self) -> dict[str, str]:
        return {FILE: self._need_bpe().to_str()}

    def load_assets(self, folder: str | Path) -> None:
        self.bpe = Bpe.load(folder)

    def adopt_tokenizer(self, folder: str | Path) -> bool:
        if not (Path(folder) / FILE).is_file():
            raise ValueError(f"no {FILE} in {folder}: task {self.name} must tokenize with the checkpoint's own")
        self.load_assets(folder)
        return True

    def load_data(self, path: str | Path) -> list[Trajectory]:
        """Trajectories (our JSONL or mini-SWE-agent .traj.json) to train on, with the paper's filter;
        tokenized with the task's tokenizer if it has one (a pretrained checkpoint's: `adopt_tokenizer`), else
        with ``tokenizer.json`` next to the file (or inside the folder)."""
        path = Path(path)
        if not path.exists():
            raise ValueError(f"no trajectories at {path}: the path does not exist")
        if self.bpe is None:
            self.load_assets(path if path.is_dir() else path.parent)
        records = paper_filter(read_records(path)) if self.filter_data else read_records(path)
        trajs = [to_trajectory(r, self.bpe, f"{path}, record {i}") for i, r in enumerate(records, 1)]
        trajs = [t for t in trajs if any(t.loss_mask()[1:])]  # a record with nothing to learn from is left out
        if not trajs:
            raise ValueError(f"no usable trajectories in {path}")
        return trajs

    def make_data(self, path: str | Path, *, count: int, max_size: int, seed: int = 0, log=print) -> Path:
        """Run the task's hard-coded agent in the sandbox on ``count`` codebases of `MIN_SIZE`..``max_size``
        functions; write the fixed ones to ``path`` (JSONL, one line as each episode ends) and a byte-level BPE
        trained on them beside it (``tokenizer.json``, unless one is there: collecting a second agent's data
        into the same folder keeps one tokenizer for both)."""
        path = Path(path)
        if max_size < MIN_SIZE:
            raise ValueError(f"bad max size {max_size} for task {self.name}: codebases have at least {MIN_SIZE} functions")
        path.parent.mkdir(parents=True, exist_ok=True)
        records, tmp = [], path.with_name(f".{path.name}.tmp")
        with tmp.open("w") as f:
            for i in range(count):
                [r] = collect(self.agent, range(MIN_SIZE, max_size + 1), 1, seed=f"{seed}:{i}")
                if r["info"]["codefix"]["fixed"]:
                    f.write(json.dumps(r) + "\n")
                    f.flush()
                    records.append(r)
        tmp.replace(path)  # a stopped collection leaves no half file under the name training reads
        log(f"{self.name}: {len(records)} of {count} trajectories fixed the bug -> {path}")
        if not (path.parent / FILE).is_file():
            Bpe.train(texts(records), BPE_SIZE).save(path.parent)
            log(f"tokenizer ({BPE_SIZE} pieces) -> {path.parent / FILE}")
        return path

    # -- problems -----------------------------------------------------------------------------------
    def make_tool(self) -> ShellTool:
        return ShellTool(self._need_bpe(), {}, env=ENV, limits=LIMITS)

    def episode(self, problem: Codebase, *, record: bool = False, max_tokens: int | None = None) -> Episode:
        tool = ShellTool(self._need_bpe(), problem.files(), env=ENV, limits=LIMITS)
        return Episode(tool, self.input_tokens(problem), record=record, max_tokens=max_tokens)

    def sample(self, rng: random.Random, max_size: int) -> Codebase:
        return generate(rng, rng.randint(MIN_SIZE, max(MIN_SIZE, max_size)))

    def sample_eval(self, rng: random.Random, spec: str) -> Codebase:
        return generate(rng, self.parse_spec(spec))

    def parse(self, text: str) -> Codebase:
        """``N`` or ``N:SEED``: a generated codebase of N functions."""
        m = _SPEC.match(text.strip())
        if m is None or int(m.group(1)) < 2:
            raise ValueError(f"bad codebase {text!r}: expected N or N:SEED with N >= 2 functions")
        return generate(random.Random(int(m.group(2) or 0)), int(m.group(1)))

    def input_tokens(self, problem: Codebase) -> list[str]:
        return self._need_bpe().encode(f"{SYSTEM}\n{TASK}")

    def size(self, problem: Codebase) -> int:
        return problem.n

    def token_budget(self, problem: Codebase) -> int:
        """About twice the interactive agent's length, estimated without running it: one run-and-fix cycle
        (about 130 tokens) per call into a function that reaches foo and per such function."""
        edges = sum(c in problem.on_path for f in problem.functions for c, _ in f.calls)
        return 2 * 130 * (edges + len(problem.on_path)) + 256

    # -- the expert and the verdict --------------------------------------------------------------------
    def expert(self, problem: Codebase, episode: Episode) -> None:
        bpe = self._need_bpe()
        policy = make_agent(self.agent)
        obs: str | None = None
        for _ in range(8 * problem.n + 16):
            cmd = policy(obs)
            if cmd.startswith(SUBMIT):
                break
            obs = bpe.decode(episode.act(BASH, *bpe.encode(cmd), END_BASH))
        episode.act(EOS)

    def verify(self, problem: Codebase, episode: Episode) -> CodefixVerdict:
        """The workspace the episode's shell ends with (the episode must not be closed yet), run and analysed by
        `toolssm.tasks.codefix.verify.verify`; the output stream plays no part."""
        if not isinstance(episode.tool, ShellTool):
            raise ValueError(f"task {self.name} is graded on the workspace of the episode's shell, and this episode "
                             "has none")  # fmt: skip
        return verify(problem, episode.tool.files())


@register
class CodefixSingle(Codefix):
    name = "codefix-single"
    agent = "single-turn"
