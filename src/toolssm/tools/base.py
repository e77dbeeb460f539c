"""The tool (oracle) interface, gymnasium-style.

A tool is stateful and deterministic. ``reset(input_tokens)`` starts a new episode's memory (M_0 may
depend on the input, as in the paper). ``step(command_token)`` runs one command token and returns the
observation tokens (empty while a multi-token command is still being spelled out, or for a command with
no reply). ``record(token)`` tells the tool that a thought or output token was appended to the context,
for tools whose memory is the context (pointer and search memory). Invalid commands never raise: they
return an error observation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

ERR = "[ERR]"


class Tool(ABC):
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
