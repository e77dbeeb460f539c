"""Code fixing as a `Task`: ``codefix`` (interactive agent) and ``codefix-single`` (single-turn agent).

The problem is a generated codebase; it lives only in the tool (a sandboxed shell over a throwaway copy),
and the model's context starts with a fixed instruction. Tokens are byte-level BPE pieces (`Bpe`), trained
on collected trajectories (`load_data`) or a pretrained checkpoint's own (`adopt_tokenizer`), and saved with
the model (`assets`, `load_assets`). The graded "output" is the workspace after the episode, judged by
`verify_files`; ``verify`` (the output stream) is therefore not used by this task's evaluation, which is
`toolssm.tasks.codefix.run.evaluate_codefix`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from toolssm.protocol import EOS, SPECIALS, Episode, Trajectory, Vocab
from toolssm.tasks.base import Task, Verdict, register
from toolssm.tasks.codefix.agents import SUBMIT, make_agent
from toolssm.tasks.codefix.codebase import Codebase, generate
from toolssm.tasks.codefix.trajectory import (
    ENV,
    SYSTEM,
    TASK,
    paper_filter,
    read_records,
    to_trajectory,
)
from toolssm.tasks.codefix.verify import LIMITS, CodefixVerdict, verify
from toolssm.tokenizer import FILE, Bpe
from toolssm.tools.shell import BASH, END_BASH, ShellTool

MIN_SIZE = 4
_SPEC = re.compile(r"^(\d+)(?::(\d+))?$")


@register
class Codefix(Task):
    name = "codefix"
    agent = "interactive"
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

    def verify(self, problem: Codebase, output: Sequence[str]) -> Verdict:
        raise ValueError(f"task {self.name} is graded on the workspace, not the output stream: use verify_files")

    def verify_files(self, problem: Codebase, files: Mapping[str, str]) -> CodefixVerdict:
        return verify(problem, files)

    def demonstrate(self, problem: Any) -> Trajectory:
        ep = self.episode(problem, record=True)
        ep.reset()
        try:
            self.expert(problem, ep)
        finally:
            ep.tool.close()  # type: ignore[union-attr]
        assert ep.trajectory is not None and ep.terminated
        return ep.trajectory


@register
class CodefixSingle(Codefix):
    name = "codefix-single"
    agent = "single-turn"
