"""Pointer-based memory (paper §3.1, App. D.1).

Memory is the input tokens followed by every thought and output token generated so far; commands and
observations are never appended. Each pointer has four single-token commands::

    [pK.init]   create pointer K (or put it back) on the first input token     -> no observation
    [pK.left]   move pointer K one token left                                 -> no observation
    [pK.right]  move pointer K one token right                                -> no observation
    [pK.read]   read the token under pointer K                                -> exactly one token

A read outside memory returns ``[EDGE]``; a pointer may stand outside memory and walk back in. Using a
pointer that was never created, or sending a token that is not a command, returns ``[ERR]``.
"""

from __future__ import annotations

from collections.abc import Sequence

from toolssm.tools.base import ERR, Tool, register_tool

EDGE = "[EDGE]"
_OPS = ("init", "left", "right", "read")


def command(pointer: int, op: str) -> str:
    """The command token for ``op`` on pointer ``pointer`` (1-based), e.g. ``command(2, "read")``."""
    return f"[p{pointer}.{op}]"


def walk_right(act, pointer: int, stop: str) -> None:
    """Expert helper: create ``pointer`` (on the first input token) and walk it right, reading after each
    step, until it reads ``stop``; the pointer is left on ``stop``. ``act`` is `Episode.act`."""
    act(command(pointer, "init"))
    while act(command(pointer, "read"))[0] != stop:
        act(command(pointer, "right"))


@register_tool("pointer")
class PointerMemory(Tool):
    def __init__(self, n_pointers: int = 3):
        if n_pointers < 1:
            raise ValueError("n_pointers must be at least 1")
        self.n_pointers = n_pointers
        self._commands: dict[str, tuple[int, str]] = {
            command(k, op): (k, op) for k in range(1, n_pointers + 1) for op in _OPS
        }
        self.tokens = (*self._commands, EDGE, ERR)
        self.memory: list[str] = []
        self.positions: dict[int, int] = {}

    def reset(self, input_tokens: Sequence[str]) -> list[str]:
        self.memory = list(input_tokens)
        self.positions = {}
        return []

    def accepts(self, token: str) -> bool:
        return token in self._commands

    def step(self, command: str) -> list[str]:
        parsed = self._commands.get(command)
        if parsed is None:
            return [ERR]
        k, op = parsed
        if op == "init":
            self.positions[k] = 0
            return []
        pos = self.positions.get(k)
        if pos is None:
            return [ERR]
        if op == "left":
            self.positions[k] = pos - 1
            return []
        if op == "right":
            self.positions[k] = pos + 1
            return []
        return [self.memory[pos] if 0 <= pos < len(self.memory) else EDGE]

    def record(self, token: str) -> None:
        self.memory.append(token)
