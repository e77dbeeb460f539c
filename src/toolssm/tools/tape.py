"""The tape oracle of the paper's Theorem 2.2 (App. B.2): a Turing machine's tape as a tool.

Memory is a tape of cells and one head, with M_0 = the input on cells 0..n-1 and the head on cell 0.
Commands are single tokens::

    [read]       the symbol under the head, or [EOS] if the cell is blank (past the end)   -> one token
    [write:s]    write symbol s under the head ([write:_] blanks the cell)                 -> no observation
    [left]       move the head one cell left                                               -> no observation
    [right]      move the head one cell right                                              -> no observation

The paper's memory is "a token string m_t and an index i_t" and a read past the end returns [EOS]. We keep
the tape as a map from cell to symbol, so the head may walk off either end and write there (a two-way
infinite tape, the textbook Turing machine); every blank cell reads [EOS]. Thoughts and outputs are not
recorded: the tape changes only by ``[write:s]``. Writing a symbol outside the alphabet the tool was built
with, or a token that is not a command, returns ``[ERR]`` (the tool never raises on model input).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from toolssm.protocol import EOS
from toolssm.tools.base import ERR, Tool, register_tool

READ, LEFT, RIGHT = "[read]", "[left]", "[right]"
BLANK = "_"  # the blank symbol in write commands and machine definitions; a blank cell reads [EOS]


def write(symbol: str) -> str:
    """The command token that writes ``symbol`` (``BLANK`` erases)."""
    return f"[write:{symbol}]"


@register_tool("tape")
class TapeMemory(Tool):
    def __init__(self, alphabet: Iterable[str]):
        self.alphabet = tuple(dict.fromkeys(s for s in alphabet if s != BLANK))
        for s in self.alphabet:
            if not s or any(c.isspace() for c in s) or s in (EOS, ERR):
                raise ValueError(f"bad tape symbol {s!r}: symbols are non-empty, without spaces, not {EOS}/{ERR}")
        self._writes = {write(s): s for s in self.alphabet}
        self._writes[write(BLANK)] = None
        self.tokens = (READ, LEFT, RIGHT, *self._writes, EOS, ERR)
        self._commands = frozenset((READ, LEFT, RIGHT, *self._writes))
        self.cells: dict[int, str] = {}
        self.head = 0

    def reset(self, input_tokens: Sequence[str]) -> list[str]:
        self.cells = {i: s for i, s in enumerate(input_tokens) if s != BLANK}
        self.head = 0
        return []

    def accepts(self, token: str) -> bool:
        return token in self._commands

    def step(self, command: str) -> list[str]:
        if command == READ:
            return [self.cells.get(self.head, EOS)]
        if command == RIGHT:
            self.head += 1
            return []
        if command == LEFT:
            self.head -= 1
            return []
        if command not in self._writes:
            return [ERR]
        s = self._writes[command]
        if s is None:
            self.cells.pop(self.head, None)
        else:
            self.cells[self.head] = s
        return []

    def contents(self) -> list[str]:
        """The tape from cell 0 up to (not including) the first blank: what a read-back would output."""
        out, i = [], 0
        while i in self.cells:
            out.append(self.cells[i])
            i += 1
        return out
