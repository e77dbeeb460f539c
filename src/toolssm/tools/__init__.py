"""Tool oracles. Each takes command tokens and answers with observation tokens."""

from toolssm.tools.base import ERR, Tool
from toolssm.tools.pointer import EDGE, PointerMemory

__all__ = ["EDGE", "ERR", "PointerMemory", "Tool"]
