"""Pointer-based memory (paper §3.1, App. D.1).

Memory is the input tokens followed by every thought and output token generated so far; commands and
observations are never appended. Each pointer has four single-token commands::

    [pK.init]   create pointer K (or put it back) on the first input token     -> no observation
    [pK.left]   move pointer K one token left                                 -> no observation
    [pK.right]  move pointer K one token right                                -> no observation
    [pK.read]   read the token under pointer K                                -> exactly one token

A read outside memory returns ``[EDGE]``; a pointer may stand outside memory and walk back in. Using a
pointer that was never created, or sending a token that is not a command, returns ``[ERR]``.

Memory is compact: one small integer a token (an ``array.array`` of indices into the tool's own table of the
symbols it has seen: 1 byte a token while there are at most 256 of them, 4 bytes beyond), not a list of
strings, so the memory of a 36-million-token episode is tens of megabytes. ``memory`` gives it back as strings.
"""

from __future__ import annotations

from array import array
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
        self._symbols: list[str] = []  # the symbols seen, in order of first sight
        self._index: dict[str, int] = {}  # symbol -> its index in _symbols
        self._mem = array("B")  # the memory: indices into _symbols
        self.positions: dict[int, int] = {}

    def _intern(self, token: str) -> int:
        i = self._index.get(token)
        if i is None:
            i = self._index[token] = len(self._symbols)
            self._symbols.append(token)
            if i == 256 and self._mem.typecode == "B":  # a 257th symbol: widen to 4 bytes a token
                self._mem = array("I", self._mem)
        return i

    @property
    def memory(self) -> list[str]:
        """The memory as token strings (input, then every thought and output token)."""
        sym = self._symbols
        return [sym[i] for i in self._mem]

    def memory_ids(self, vocab) -> list[int]:
        """The memory as ids of ``vocab`` (a `toolssm.protocol.Vocab`)."""
        table = [vocab.id(s) for s in self._symbols]
        return [table[i] for i in self._mem]

    def reset(self, input_tokens: Sequence[str]) -> list[str]:
        self._symbols, self._index, self._mem = [], {}, array("B")
        for t in input_tokens:
            self.record(t)
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
        return [self._symbols[self._mem[pos]] if 0 <= pos < len(self._mem) else EDGE]

    def record(self, token: str) -> None:
        i = self._intern(token)  # first: it may widen self._mem
        self._mem.append(i)

    def load(self, symbols: Sequence[str], indices: bytes, positions: dict[int, int]) -> None:
        """Set the whole state at once: memory token t is ``symbols[indices[t]]`` (``symbols`` distinct, in order
        of first sight; ``indices`` the raw bytes of 1-byte indices, 4-byte past 256 symbols), the pointers at
        ``positions``. For a decoder that ran this tool's logic elsewhere (toolssm.engine) and hands it back."""
        self._symbols, self._index = list(symbols), {s: i for i, s in enumerate(symbols)}
        self._mem = array("B" if len(symbols) <= 256 else "I")
        self._mem.frombytes(indices)
        self.positions = dict(positions)
