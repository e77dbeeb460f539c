"""Turing-machine trace tasks (``tm-increment``, ``tm-add``, ``tm-palindrome``, ``tm-unary``).

Each adapts one demonstration machine of `toolssm.tasks.turing_machines` to the `Task` API, so that a model
trains on the Theorem 2.2 traces through the normal pipeline (``toolssm train --task tm-increment``).
The tool is the tape oracle; the input lives on the tape only (``input_in_context = False``), as in the
proof. The expert is the table learner's policy with the machine's full transition table, so it reacts
only to what the tape returns, and it is local: the next token follows from the last state thought and
the last observation (docs/theory.md).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from toolssm.protocol import Episode
from toolssm.tasks.base import Task, Verdict, register
from toolssm.tasks.turing_machines import DEMOS, Demo, TableLearner, compile_trace
from toolssm.tools.tape import TapeMemory


class TuringTask(Task):
    demo: Demo
    input_in_context = False

    def make_tool(self) -> TapeMemory:
        return self.demo.machine.tool()

    def sample(self, rng: random.Random, max_size: int) -> tuple[str, ...]:
        return tuple(self.demo.sample(rng, rng.randint(1, max_size)))

    def sample_eval(self, rng: random.Random, spec: str) -> tuple[str, ...]:
        return tuple(self.demo.sample(rng, self.parse_spec(spec)))

    def parse(self, text: str) -> tuple[str, ...]:
        return tuple(self.demo.parse(text))

    def format(self, problem: Sequence[str]) -> str:
        return " ".join(problem)

    def input_tokens(self, problem: Sequence[str]) -> list[str]:
        return list(problem)

    def expert(self, problem: Sequence[str], episode: Episode) -> None:
        self._policy.drive(episode)

    def verify(self, problem: Sequence[str], episode: Episode) -> Verdict:
        expected, output = self.demo.truth(problem), episode.output
        return Verdict(list(output) == expected, " ".join(expected), " ".join(output))

    def size(self, problem: Sequence[str]) -> int:
        return len(problem)

    def token_budget(self, problem: Sequence[str]) -> int:
        return 2 * len(compile_trace(self.demo.machine, problem)) + 64


def _make(machine: str) -> type[TuringTask]:
    demo = DEMOS[machine]
    cls = type(
        f"TM_{machine}", (TuringTask,),
        {"name": f"tm-{machine}", "symbols": demo.machine.tokens(), "demo": demo,
         "_policy": TableLearner.from_machine(demo.machine), "replay_spec": "40" if machine == "palindrome" else "300",
         "__doc__": f"Theorem 2.2 traces of the {machine} machine: {demo.about}."},
    )  # fmt: skip
    return register(cls)


for _m in DEMOS:
    _make(_m)
