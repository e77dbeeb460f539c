"""The interaction protocol: token roles, trajectories, the vocabulary, the loss mask, and the episode.

The paper (§2.2, App. A) has four kinds of model-side token plus the input:

    input        the problem, given                       -> never trained on
    thought      internal reasoning, appended to memory   -> trained on
    command      sent to the tool oracle                  -> trained on
    observation  the oracle's answer, forced into the model -> never trained on
    output       the answer stream, the only thing graded -> trained on

`Episode` is the single place where a token gets its role. The expert (to write training data) and the
rollout (to decode with a model) both drive an `Episode`, so a trajectory means the same thing in both.
Roles are inferred from position, as in the paper's experiments: a token the tool accepts is a command,
the tool's reply is an observation, and every other generated token is a thought until the answer
marker ``[ANS]`` and an output after it.
"""

from __future__ import annotations

import enum
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple


PAD, BOS, EOS, ANS = "[PAD]", "[BOS]", "[EOS]", "[ANS]"
SPECIALS: tuple[str, ...] = (PAD, BOS, EOS, ANS)


class Role(enum.IntEnum):
    INPUT = 0
    THOUGHT = 1
    COMMAND = 2
    OBSERVATION = 3
    OUTPUT = 4


TRAINED_ROLES = frozenset({Role.THOUGHT, Role.COMMAND, Role.OUTPUT})


class Regime(enum.Enum):
    """The paper's three regimes (§2.2), read off a trajectory."""

    COT_ONLY = "cot-only"  # thoughts and outputs, no command
    SINGLE_TURN = "single-turn"  # exactly one command, answered before any output
    INTERACTIVE = "interactive"  # anything else: commands freely interleaved


@dataclass
class Trajectory:
    """Every token of an episode, in order, with its role."""

    tokens: list[str] = field(default_factory=list)
    roles: list[Role] = field(default_factory=list)

    def append(self, token: str, role: Role) -> None:
        self.tokens.append(token)
        self.roles.append(role)

    def extend(self, tokens: Iterable[str], role: Role) -> None:
        for t in tokens:
            self.append(t, role)

    def __len__(self) -> int:
        return len(self.tokens)

    def loss_mask(self) -> list[bool]:
        """True where the model is trained to predict the token (thought, command, output)."""
        return [r in TRAINED_ROLES for r in self.roles]

    def output(self) -> list[str]:
        """The output stream: what is graded. The closing [EOS] is not part of the answer."""
        return [t for t, r in zip(self.tokens, self.roles) if r == Role.OUTPUT and t != EOS]

    def regime(self) -> Regime:
        n_cmd = sum(r == Role.COMMAND for r in self.roles)
        if n_cmd == 0:
            return Regime.COT_ONLY
        if n_cmd == 1:
            first_out = next((i for i, r in enumerate(self.roles) if r == Role.OUTPUT), len(self.roles))
            cmd = self.roles.index(Role.COMMAND)
            if cmd < first_out:
                return Regime.SINGLE_TURN
        return Regime.INTERACTIVE

    def to_record(self, problem: str = "") -> dict:
        """A JSON-ready record: the problem's text (``Task.format``), the tokens, and each token's role by name
        (``input``, ``thought``, ``command``, ``observation``, ``output``). `from_record` reads it back."""
        return {"problem": problem, "tokens": list(self.tokens), "roles": [r.name.lower() for r in self.roles]}

    @classmethod
    def from_record(cls, record: object, where: str = "record") -> Trajectory:
        """The trajectory of a `to_record` record; ValueError (one line, naming ``where``) for a bad one."""
        if not isinstance(record, dict) or not isinstance(record.get("tokens"), list) or not isinstance(
            record.get("roles"), list
        ):
            raise ValueError(f"{where}: not a trajectory record (expected an object with 'tokens' and 'roles' lists)")
        tokens, roles = record["tokens"], record["roles"]
        if len(tokens) != len(roles):
            raise ValueError(f"{where}: {len(tokens)} tokens but {len(roles)} roles")
        if not all(isinstance(t, str) for t in tokens):
            raise ValueError(f"{where}: every token must be a string")
        names = {r.name.lower(): r for r in Role}
        bad = next((r for r in roles if r not in names), None)
        if bad is not None or not roles:
            why = "no tokens" if not roles else f"unknown role {bad!r}"
            raise ValueError(f"{where}: {why} (roles: {', '.join(names)})")
        return cls(list(tokens), [names[r] for r in roles])

    def to_messages(self, detokenize=" ".join) -> list[dict]:
        """Chat messages: the input is the user turn; thoughts and outputs are assistant text; each tool call (a
        run of command tokens) is an assistant message with ``tool_calls``, and the observation after it a
        ``tool`` message. ``detokenize`` turns a run of tokens into text (default: joined by spaces)."""
        kinds = [Role.THOUGHT if r == Role.OUTPUT else r for r in self.roles]  # thought and output: one message
        messages: list[dict] = []
        i = 0
        while i < len(self.tokens):
            j, kind = i, kinds[i]
            while j < len(self.tokens) and kinds[j] == kind:
                j += 1
            text = detokenize(self.tokens[i:j])
            if kind == Role.INPUT:
                messages.append({"role": "user", "content": text})
            elif kind == Role.COMMAND:
                call = {"type": "function", "function": {"name": "tool", "arguments": {"command": text}}}
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
            elif kind == Role.OBSERVATION:
                messages.append({"role": "tool", "name": "tool", "content": text})
            else:
                messages.append({"role": "assistant", "content": text})
            i = j
        return messages

    def render(self, *, width: int = 0) -> str:
        """Human-readable form: one line per run of same-role tokens, tagged with the role."""
        lines: list[str] = []
        run: list[str] = []
        role: Role | None = None
        for t, r in zip(self.tokens, self.roles):
            if r != role and run:
                lines.append(f"{role.name.lower():>11}  {' '.join(run)}")  # type: ignore[union-attr]
                run = []
            role = r
            run.append(t)
        if run:
            lines.append(f"{role.name.lower():>11}  {' '.join(run)}")  # type: ignore[union-attr]
        return "\n".join(lines)


class Vocab:
    """A fixed list of token strings. Ids are positions; [PAD] is always 0."""

    def __init__(self, tokens: Sequence[str]):
        seen: dict[str, int] = {}
        for t in tokens:
            if t not in seen:
                seen[t] = len(seen)
        if next(iter(seen), None) != PAD:
            raise ValueError("a vocabulary must start with [PAD]")
        self._ids = seen
        self._tokens = list(seen)

    @classmethod
    def build(cls, *groups: Iterable[str]) -> Vocab:
        """Specials, then each group (task symbols, tool tokens) in order, duplicates dropped."""
        return cls([*SPECIALS, *(t for g in groups for t in g)])

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, token: str) -> bool:
        return token in self._ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self._tokens == other._tokens

    @property
    def tokens(self) -> list[str]:
        return list(self._tokens)

    def id(self, token: str) -> int:
        try:
            return self._ids[token]
        except KeyError:
            raise KeyError(f"token {token!r} is not in the vocabulary") from None

    def ids(self, tokens: Iterable[str]) -> list[int]:
        ids = self._ids
        return [ids[t] for t in tokens]

    def token(self, i: int) -> str:
        return self._tokens[i]

    def to_json(self) -> str:
        return json.dumps(self._tokens)

    @classmethod
    def from_json(cls, s: str) -> Vocab:
        return cls(json.loads(s))


class Tool(ABC):
    """The oracle an `Episode` drives (toolssm.tools.base has the registry and the full contract)."""

    #: every token this tool can take as a command or give back as an observation (beyond memory tokens)
    tokens: tuple[str, ...] = ()

    @abstractmethod
    def reset(self, input_tokens: Sequence[str]) -> list[str]:
        """Start a new episode. Returns an initial observation (usually empty)."""

    @abstractmethod
    def accepts(self, token: str) -> bool:
        """Whether the episode should route this generated token to the tool as a command."""

    @abstractmethod
    def step(self, command: str) -> list[str]:
        """Run one command token; return the observation tokens."""

    def record(self, token: str) -> None:  # noqa: B027 - optional hook
        """A thought or output token was generated. Context-memory tools append it."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the tool holds (processes, files). Called once the episode is over and graded; safe to
        call twice. Most tools hold only memory: nothing to do."""


class Step(NamedTuple):
    """What `Episode.step` returns, gymnasium-style: `terminated` (the model said [EOS]) is kept apart from
    `truncated` (the token budget ran out)."""

    observation: list[str]
    role: Role
    terminated: bool
    truncated: bool


class Episode:
    """One problem being solved: routes each generated token to the tool or to memory and gives it a role.

    ``reset()`` returns the tokens the model must read first: [BOS] and the input, or [BOS] alone when
    ``show_input`` is off and the input lives only in the tool's memory (as on the tape of the paper's
    Theorem 2.2 construction; see docs/design.md, "the input lives in the tool"). Each ``step(token)``
    takes one *generated* token and returns the observation tokens the model must read next (empty
    unless the token completed a tool command). The episode keeps the output stream; it keeps the full
    trajectory only when ``record`` is set, so a long rollout's memory does not grow with its length
    beyond the tool's own memory.

    The episode owns its tool's lifetime: ``with Episode(...) as ep:`` closes the tool on the way out (a
    sandbox's processes and workspace are gone, whatever happened inside). A finished episode is graded
    inside the block, while the tool still holds its final state.
    """

    def __init__(
        self,
        tool: Tool | None,
        input_tokens: Sequence[str],
        *,
        max_tokens: int | None = None,
        record: bool = True,
        answer_token: str = ANS,
        show_input: bool = True,
    ):
        self.tool = tool
        self.input_tokens = list(input_tokens)
        self.show_input = show_input
        self.max_tokens = max_tokens
        self.answer_token = answer_token
        self.trajectory: Trajectory | None = Trajectory() if record else None
        self.output: list[str] = []
        self.n_generated = 0
        self.answering = False
        self.terminated = False
        self.truncated = False

    # -- gymnasium-like API -------------------------------------------------------------------
    def reset(self) -> list[str]:
        self.output.clear()
        self.n_generated = 0
        self.answering = self.terminated = self.truncated = False
        first = [BOS, *self.input_tokens] if self.show_input else [BOS]
        obs = self.tool.reset(self.input_tokens) if self.tool is not None else []
        if self.trajectory is not None:
            self.trajectory = Trajectory()
            self.trajectory.extend(first, Role.INPUT)
            self.trajectory.extend(obs, Role.OBSERVATION)
        return first + obs

    def step(self, token: str) -> Step:
        if self.terminated or self.truncated:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        self.n_generated += 1
        obs: list[str] = []
        if token == EOS:
            role = Role.OUTPUT
            self.terminated = True
        elif self.tool is not None and self.tool.accepts(token):
            role = Role.COMMAND
            obs = self.tool.step(token)
        else:
            role = Role.OUTPUT if self.answering else Role.THOUGHT
            if token == self.answer_token:
                self.answering = True
            elif role == Role.OUTPUT:
                self.output.append(token)
            if self.tool is not None:
                self.tool.record(token)
        if self.trajectory is not None:
            self.trajectory.append(token, role)
            self.trajectory.extend(obs, Role.OBSERVATION)
        if not self.terminated and self.max_tokens is not None and self.n_generated >= self.max_tokens:
            self.truncated = True
        return Step(obs, role, self.terminated, self.truncated)

    # -- the tool's lifetime --------------------------------------------------------------------
    def close(self) -> None:
        """Release the tool (`Tool.close`); safe to call more than once."""
        if self.tool is not None:
            self.tool.close()

    def __enter__(self) -> Episode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- expert convenience ---------------------------------------------------------------------
    def act(self, *tokens: str) -> list[str]:
        """Emit tokens one by one (as an expert would) and return the last observation."""
        obs: list[str] = []
        for t in tokens:
            obs = self.step(t).observation
        return obs
