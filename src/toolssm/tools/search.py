"""Search-based memory (paper App. D.1, §2.2): ``find`` returns every memory line containing a token string.

Memory is the input tokens followed by every thought and output token generated so far (appended through
``record``); commands and observations are never appended. It is split into lines by the newline token
``[NL]``. The line being written (after the last ``[NL]``) is searchable too.

One multi-token command::

    [find] x1 ... xm [/find]   ->   [obs] line [NL] line [NL] ... [/obs]

The tool accepts ``[find]`` and every token after it up to and including ``[/find]`` (so the query can
hold any token, ``[NL]`` excepted); it answers on ``[/find]``. The observation lists, in memory order, every
line that contains x1 ... xm as a contiguous run of tokens, each line followed by ``[NL]``, between
``[obs]`` and ``[/obs]``; no match gives ``[obs] [/obs]``. A line is listed once however often it matches.

Invalid commands return ``[ERR]`` (and close any open query) and never raise:
- ``[/find]`` with no open ``[find]``;
- an empty query (``[find] [/find]``);
- ``[find]`` while a query is open;
- ``[NL]`` inside a query (a line never contains one, so the query could not match);
- any other token sent to ``step`` outside a query.

Lookups go through an inverted index (token -> lines holding it), so a query costs about the number of
lines holding its rarest token, not the size of memory.
"""

from __future__ import annotations

from collections.abc import Sequence

from toolssm.tools.base import ERR, Tool, register_tool

FIND, END_FIND = "[find]", "[/find]"
OBS, END_OBS = "[obs]", "[/obs]"
NL = "[NL]"


@register_tool("search")
class SearchMemory(Tool):
    tokens = (FIND, END_FIND, OBS, END_OBS, NL, ERR)

    def __init__(self) -> None:
        self.lines: list[list[str]] = [[]]
        self._index: dict[str, list[int]] = {}
        self._query: list[str] | None = None

    # -- memory ---------------------------------------------------------------------------------------
    def reset(self, input_tokens: Sequence[str]) -> list[str]:
        self.lines = [[]]
        self._index = {}
        self._query = None
        for t in input_tokens:
            self.record(t)
        return []

    def record(self, token: str) -> None:
        if token == NL:
            self.lines.append([])
            return
        line = len(self.lines) - 1
        self.lines[line].append(token)
        posting = self._index.setdefault(token, [])
        if not posting or posting[-1] != line:
            posting.append(line)

    @property
    def memory(self) -> list[str]:
        """The memory as one token list, lines joined by ``[NL]``."""
        out: list[str] = []
        for i, line in enumerate(self.lines):
            if i:
                out.append(NL)
            out.extend(line)
        return out

    # -- commands -------------------------------------------------------------------------------------
    def accepts(self, token: str) -> bool:
        return self._query is not None or token in (FIND, END_FIND)

    def step(self, command: str) -> list[str]:
        if self._query is None:
            if command == FIND:
                self._query = []
                return []
            return [ERR]  # [/find] without [find], or not a command at all
        if command == END_FIND:
            query, self._query = self._query, None
            if not query:
                return [ERR]
            return self.find(query)
        if command in (FIND, NL):
            self._query = None
            return [ERR]
        self._query.append(command)
        return []

    def find(self, query: Sequence[str]) -> list[str]:
        """The observation for ``query``: matching lines in memory order, each ended by ``[NL]``."""
        query = list(query)
        postings = [self._index.get(t) for t in dict.fromkeys(query)]
        if not query or any(p is None for p in postings):
            return [OBS, END_OBS]
        rarest = min(postings, key=len)  # type: ignore[arg-type]
        out = [OBS]
        m = len(query)
        for i in rarest:  # type: ignore[union-attr]
            line = self.lines[i]
            if any(line[j : j + m] == query for j in range(len(line) - m + 1)):
                out.extend(line)
                out.append(NL)
        out.append(END_OBS)
        return out
