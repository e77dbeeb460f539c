"""Tool oracles. Each takes command tokens and answers with observation tokens."""

from toolssm.tools.base import ERR, Tool
from toolssm.tools.calculator import CALC, Calculator
from toolssm.tools.pointer import EDGE, PointerMemory
from toolssm.tools.search import SearchMemory

__all__ = ["CALC", "EDGE", "ERR", "Calculator", "PointerMemory", "SearchMemory", "Tool"]
from toolssm.tools.shell import ShellSandbox, ShellTool  # noqa: E402
