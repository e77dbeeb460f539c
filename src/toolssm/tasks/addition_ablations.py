"""The paper's addition ablations (App. D.7): the same problems as ``addition``, other regimes.

All four share addition's sampler, sizes, parser and input ``a+b=``; only the trajectory differs:

    addition-direct      no CoT, no tool:  [ANS] s1 s2 .. sk [EOS]              (sum, most significant first)
    addition-reversed    no CoT, no tool:  [ANS] sk .. s2 s1 [EOS]              (least significant first)
    addition-notool      CoT, no tool: the addition expert's tokens, every one of them predicted by the
                         model: would-be commands and observations are thoughts (outputs after [ANS])
    addition-calculator  single-turn: [calc] -> observation s1 .. sk; [ANS] s1 .. sk [EOS]

``Trajectory.regime()`` reads the first three as cot-only (no command) and the calculator as single-turn.
"""

from __future__ import annotations


from toolssm.protocol import ANS, EOS, Episode, Role
from toolssm.tasks.addition import Addition, AdditionProblem, add_decimal
from toolssm.tasks.base import Verdict, answered, register
from toolssm.tools.calculator import CALC, Calculator
from toolssm.tools.pointer import PointerMemory


@register
class AdditionDirect(Addition):
    """Answer at once, most significant digit first. The expert computes the sum itself: no tool."""

    name = "addition-direct"
    input_in_context = True  # the paper's ablation: the model reads the input

    def make_tool(self) -> None:
        return None

    def token_budget(self, problem: AdditionProblem) -> int:
        return max(len(problem.a), len(problem.b)) + 16

    def answer(self, problem: AdditionProblem) -> list[str]:
        return list(add_decimal(problem.a, problem.b))

    def expert(self, problem: AdditionProblem, episode: Episode) -> None:
        episode.act(ANS, *self.answer(problem), EOS)


@register
class AdditionReversed(AdditionDirect):
    """Answer at once, least significant digit first; the verifier reverses the output."""

    name = "addition-reversed"

    def answer(self, problem: AdditionProblem) -> list[str]:
        return list(reversed(add_decimal(problem.a, problem.b)))

    def verify(self, problem: AdditionProblem, episode: Episode) -> Verdict:
        v = super().verify(problem, answered(reversed(episode.output)))
        return Verdict(v.correct, v.expected[::-1], v.got[::-1])  # as written: least significant first


@register
class AdditionNoTool(Addition):
    """The addition expert's trajectory with no tool: the model must predict the read results too.

    Every token after the input is generated, so it is a thought, or an output after ``[ANS]``. The
    output stream then holds the read-back's would-be commands and observations; the verifier drops
    them (a pointer command, and the token after a read), which leaves what ``addition`` grades.
    """

    name = "addition-notool"
    input_in_context = True  # the paper's ablation: the model reads the input
    symbols = (*Addition.symbols, *PointerMemory(3).tokens)

    def make_tool(self) -> None:
        return None

    def expert(self, problem: AdditionProblem, episode: Episode) -> None:
        traj = Addition().demonstrate(problem)  # run with the real tool, then replay with none
        for token, role in zip(traj.tokens, traj.roles):
            if role != Role.INPUT:
                episode.step(token)

    def verify(self, problem: AdditionProblem, episode: Episode) -> Verdict:
        pointer, answer, after_read = PointerMemory(3), [], False
        for t in episode.output:
            if pointer.accepts(t):
                after_read = t.endswith(".read]")
            elif after_read:  # the would-be observation ([ANS] read back is not in the stream)
                after_read = False
            else:
                answer.append(t)
        return super().verify(problem, answered(answer))


@register
class AdditionCalculator(Addition):
    """Single-turn: one ``[calc]`` command right after the input; copy its answer to the output."""

    name = "addition-calculator"
    input_in_context = True  # the paper's ablation: the model reads the input

    def make_tool(self) -> Calculator:
        return Calculator()

    def token_budget(self, problem: AdditionProblem) -> int:
        return 2 * max(len(problem.a), len(problem.b)) + 16

    def expert(self, problem: AdditionProblem, episode: Episode) -> None:
        result = episode.act(CALC)
        episode.act(ANS, *result, EOS)
