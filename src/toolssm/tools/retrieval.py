"""Retrieval of the next example (the camera-ready's Oolong experiment: a tool that "retrieves the next example").

The input is a header (the question, and anything else the model must read first), then ``[ctx]``, then the
examples, each ended by ``[/ex]``::

    header ... [ctx] w w w ? [/ex] w w ? [/ex] ...

``reset(input)`` keeps the examples and returns the header as the first observation, so the model reads the
question but never the whole context at once. One command, one token::

    [next]   ->   w w w ? [/ex]      the next example's tokens, ended by [/ex]
    [next]   ->   [end]              once every example has been returned (and on every [next] after that)

The examples are returned in input order, each exactly once. An input without ``[ctx]`` is all header (no
examples); tokens after the last ``[/ex]`` form one last example as if it were closed. Any token other than
``[next]`` sent to ``step`` returns ``[ERR]`` and moves nothing. Thoughts are not kept: the tool's memory is
the context, read once, front to back.
"""

from __future__ import annotations

from collections.abc import Sequence

from toolssm.tools.base import ERR, Tool

NEXT, END = "[next]", "[end]"
CTX, END_EX = "[ctx]", "[/ex]"


def split_examples(tokens: Sequence[str]) -> list[list[str]]:
    """The examples of a context ``w w [/ex] w [/ex] ...``, without their ``[/ex]``."""
    out: list[list[str]] = []
    cur: list[str] = []
    for t in tokens:
        if t == END_EX:
            out.append(cur)
            cur = []
        else:
            cur.append(t)
    if cur:
        out.append(cur)
    return out


class RetrievalTool(Tool):
    tokens = (NEXT, END, CTX, END_EX, ERR)

    def __init__(self) -> None:
        self.examples: list[list[str]] = []
        self.cursor = 0

    def reset(self, input_tokens: Sequence[str]) -> list[str]:
        toks = list(input_tokens)
        cut = toks.index(CTX) if CTX in toks else len(toks)
        self.examples = split_examples(toks[cut + 1 :])
        self.cursor = 0
        return toks[:cut]

    def accepts(self, token: str) -> bool:
        return token == NEXT

    def step(self, command: str) -> list[str]:
        if command != NEXT:
            return [ERR]
        if self.cursor >= len(self.examples):
            return [END]
        ex = self.examples[self.cursor]
        self.cursor += 1
        return [*ex, END_EX]
