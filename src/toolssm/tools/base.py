"""The tool registry, and the tool (oracle) interface, gymnasium-style: `Tool` is defined beside the `Episode` that
drives it (toolssm.protocol) and imported here, where every tool finds it.

A tool is stateful and deterministic. ``reset(input_tokens)`` starts a new episode's memory (M_0 may
depend on the input, as in the paper). ``step(command_token)`` runs one command token and returns the
observation tokens (empty while a multi-token command is still being spelled out, or for a command with
no reply). ``record(token)`` tells the tool that a thought or output token was appended to the context,
for tools whose memory is the context (pointer and search memory). Invalid commands never raise: they
return an error observation. ``close()`` releases what the tool holds outside Python (a sandbox's
processes and workspace); an `Episode` calls it when it ends, so no tool needs a finalizer to be safe.

Tools are registered by name (`register_tool`, `TOOLS`); another package adds its own under the
``toolssm.tools`` entry point (docs/adding.md).
"""

from __future__ import annotations

from collections.abc import Callable

from toolssm.protocol import Tool
from toolssm.registry import Registry

__all__ = ["ERR", "TOOLS", "Tool", "get_tool", "register_tool", "tool_names"]

ERR = "[ERR]"


#: every tool by name: the built-in ones, and the plugins of the ``toolssm.tools`` entry-point group
TOOLS: Registry[type[Tool]] = Registry("tool", "toolssm.tools")


def register_tool(name: str) -> Callable[[type[Tool]], type[Tool]]:
    """Class decorator: add the tool under ``name``. A name already taken is a one-line error naming both."""

    def deco(cls: type[Tool]) -> type[Tool]:
        TOOLS.add(name, cls)
        return cls

    return deco


def get_tool(name: str) -> type[Tool]:
    return TOOLS.get(name)


def tool_names() -> list[str]:
    return TOOLS.names()
