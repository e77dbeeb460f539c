"""Tool oracles. Each takes command tokens and answers with observation tokens."""

from toolssm.tools.base import ERR, Tool
from toolssm.tools.pointer import EDGE, PointerMemory
from toolssm.tools.search import SearchMemory

__all__ = ["EDGE", "ERR", "PointerMemory", "SearchMemory", "Tool"]
