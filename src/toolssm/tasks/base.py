"""The task interface: a seeded generator, an expert that drives the real tool, and a verifier.

A task knows nothing of models. Data flows one way::

    Task.sample -> problem -> Task.expert drives an Episode (and its Tool) -> Trajectory
                -> Vocab ids + loss mask -> model -> rollout drives an Episode -> Task.verify(problem, episode)

``verify`` is given the finished episode: its output stream (``episode.output``) and its tool in its final
state (``episode.tool``), so a task graded on what the agent did to its tool (code fixing: the workspace)
goes through the same call as one graded on its answer (addition). An episode owns its tool: use it as a
context manager (``with task.episode(p) as ep:``) and grade inside the block, before the tool is closed.

To add a task, subclass `Task` and decorate it with `register`: in one file under ``tasks/``, or in a
package of your own declared under the ``toolssm.tasks`` entry point; see ``docs/adding.md``.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from toolssm.protocol import Episode, Role, Trajectory, Vocab
from toolssm.registry import Registry
from toolssm.tools.base import Tool


#: an evaluation spec that starts with this, "<=5", means "drawn as in training, sizes up to 5" (`Task.draw`)
TRAINING_DRAW = "<="


@dataclass(frozen=True)
class Verdict:
    correct: bool
    expected: str
    got: str


class Task(ABC):
    name: ClassVar[str]
    #: tokens the task itself writes: input symbols, thought symbols, output symbols
    symbols: ClassVar[tuple[str, ...]]
    #: whether the model reads the input as context. False: only the tool holds it (M_0 = input), and the
    #: model starts from [BOS] alone, so nothing it consumes grows with the input (docs/design.md)
    input_in_context: ClassVar[bool] = True
    #: an evaluation spec far past the training sizes at which the expert must still replay exactly and be graded
    #: correct (tests/test_task_contract.py runs it for every registered task, plugins included)
    replay_spec: ClassVar[str] = "1000"

    # -- what a task must define ------------------------------------------------------------------
    @abstractmethod
    def make_tool(self) -> Tool | None:
        """A fresh tool for one episode (None for tool-free regimes)."""

    @abstractmethod
    def sample(self, rng: random.Random, max_size: int) -> Any:
        """A problem from the training distribution of size at most ``max_size``."""

    @abstractmethod
    def sample_eval(self, rng: random.Random, spec: str) -> Any:
        """A problem for evaluation at the size given by ``spec`` (usually a number, e.g. "1000")."""

    @abstractmethod
    def parse(self, text: str) -> Any:
        """A user-given problem. Raises ValueError with a one-line message on bad input."""

    @abstractmethod
    def input_tokens(self, problem: Any) -> list[str]: ...

    @abstractmethod
    def expert(self, problem: Any, episode: Episode) -> None:
        """Solve ``problem`` by emitting tokens into ``episode``, reacting only to what the tool returns."""

    @abstractmethod
    def verify(self, problem: Any, episode: Episode) -> Verdict:
        """Grade a finished episode by simulating the task, not by comparing with the expert's string: its output
        stream ``episode.output`` (the tokens after ``[ANS]``) and, for a task graded on the tool's final state,
        ``episode.tool``. A given answer is graded as ``verify(problem, answered(tokens))``."""

    @abstractmethod
    def size(self, problem: Any) -> int:
        """The problem's length, the x-axis of every length-generalization plot."""

    # -- provided -----------------------------------------------------------------------------------
    def format(self, problem: Any) -> str:
        return "".join(self.input_tokens(problem))

    def parse_spec(self, spec: str) -> int:
        """Validate an evaluation size spec; returns the size it stands for."""
        try:
            n = int(spec)
        except ValueError:
            raise ValueError(f"bad size {spec!r} for task {self.name}: expected a positive integer") from None
        if n < 1:
            raise ValueError(f"bad size {spec!r} for task {self.name}: sizes must be positive")
        return n

    def spec_part(self, part: str, spec: str, form: str) -> int:
        """One size of a compound spec such as ``N1+N2``, by the base rule (a positive integer); an error quotes the
        whole spec and its ``form``."""
        try:
            return Task.parse_spec(self, part)
        except ValueError:
            raise ValueError(f"bad size {spec!r} for task {self.name}: expected {form} (positive)") from None

    def spec_size(self, spec: str) -> int:
        """The size any evaluation spec stands for: ``parse_spec``'s, or N for ``"<=N"``, which means problems
        drawn as in training (``sample(rng, N)``: every size up to N, mixed as training mixed them)."""
        if spec.startswith(TRAINING_DRAW):
            try:  # a plain N, whatever else the task's own specs allow
                return self.parse_spec(str(Task.parse_spec(self, spec[len(TRAINING_DRAW) :])))
            except ValueError as e:
                why = str(e).split(": ", 1)[-1]
                raise ValueError(f"bad size {spec!r} for task {self.name}: {TRAINING_DRAW}N (drawn as in training) "
                                 f"takes one size N; {why}") from None  # fmt: skip
        return self.parse_spec(spec)

    def draw(self, rng: random.Random, spec: str) -> Any:
        """A problem for any evaluation spec: ``sample_eval``'s, or for ``"<=N"`` one from ``sample(rng, N)``."""
        if spec.startswith(TRAINING_DRAW):
            return self.sample(rng, self.spec_size(spec))
        return self.sample_eval(rng, spec)

    def vocab(self) -> Vocab:
        tool = self.make_tool()
        if tool is not None:
            tool.close()
        return Vocab.build(self.symbols, tool.tokens if tool is not None else ())

    def episode(self, problem: Any, *, record: bool = False, max_tokens: int | None = None) -> Episode:
        return Episode(
            self.make_tool(), self.input_tokens(problem), record=record, max_tokens=max_tokens,
            show_input=self.input_in_context,
        )  # fmt: skip

    def demonstrate(self, problem: Any) -> Trajectory:
        """The expert's full trajectory for ``problem`` (its tool is closed afterwards)."""
        with self.episode(problem, record=True) as ep:
            ep.reset()
            self.expert(problem, ep)
        assert ep.trajectory is not None and ep.terminated, "the expert must end with [EOS]"
        return ep.trajectory

    def replay(self, problem: Any, trajectory: Trajectory) -> Episode:
        """Feed a trajectory's generated tokens (not its input or observations) into a fresh episode, whose
        tool answers anew. The expert-replay check: the replayed trajectory must equal the original. The
        episode is returned finished with its tool open, to be graded: close it (``with task.replay(...) as ep``)."""
        ep = self.episode(problem, record=True)
        ep.reset()
        for tok, role in zip(trajectory.tokens, trajectory.roles):
            if role not in (Role.INPUT, Role.OBSERVATION):
                ep.step(tok)
        return ep

    def load_data(self, path: str) -> list[Trajectory]:
        """Stored trajectories to train on (``train --data``); most tasks generate theirs online."""
        raise ValueError(f"task {self.name} generates its trajectories online; it takes no --data")

    def make_data(self, path: Any, *, count: int, max_size: int, seed: int = 0, log: Any = print) -> Any:
        """Write ``count`` expert trajectories on problems up to ``max_size`` to ``path``, for ``train --data`` (and
        any asset they need beside it); returns the path. For a task whose expert is too slow to run online
        (code fixing runs a sandbox), what ``toolssm collect`` and ``reproduce`` call."""
        raise ValueError(f"task {self.name} generates its trajectories online; it has no data to collect")

    def assets(self) -> dict[str, str]:
        """Files saved in the checkpoint beside the weights (name -> text), e.g. a BPE tokenizer."""
        return {}

    def load_assets(self, folder: Any) -> None:
        """Read back what `assets` saved, from a checkpoint folder."""

    def adopt_tokenizer(self, folder: Any) -> bool:
        """Tokenize the task's text with a pretrained checkpoint's tokenizer (``tokenizer.json`` in ``folder``),
        so that the vocabulary's pieces are the checkpoint's (``train --init-from``). False: the task has no
        text tokenizer; its vocabulary is its own symbols (the default)."""
        return False

    def token_budget(self, problem: Any) -> int:
        """How many tokens a model may generate before its episode is truncated: twice the expert's."""
        traj = self.demonstrate(problem)
        return 2 * len(traj) + 64


def answered(output: Iterable[str], tool: Tool | None = None) -> Episode:
    """A finished episode whose output stream is ``output`` (and whose tool, if given, is in its final state):
    what `Task.verify` grades, for an answer given as tokens."""
    ep = Episode(tool, [], record=False)
    ep.output = list(output)
    ep.terminated = True
    return ep


#: every task by name: the built-in ones, and the plugins of the ``toolssm.tasks`` entry-point group
TASKS: Registry[type[Task]] = Registry("task", "toolssm.tasks")


def register(cls: type[Task]) -> type[Task]:
    """Class decorator: add the task under ``cls.name``. A name already taken is a one-line error naming both."""
    TASKS.add(cls.name, cls)
    return cls


def get_task(name: str) -> Task:
    return TASKS.get(name)()


def task_names() -> list[str]:
    return TASKS.names()
