"""Tool oracles. Each takes command tokens and answers with observation tokens."""

from toolssm.tools.base import ERR, TOOLS, Tool, get_tool, register_tool, tool_names
from toolssm.tools.calculator import CALC, Calculator
from toolssm.tools.pointer import EDGE, PointerMemory
from toolssm.tools.search import SearchMemory
from toolssm.tools.shell import ShellSandbox, ShellTool
from toolssm.tools.tape import TapeMemory

__all__ = ["CALC", "EDGE", "ERR", "TOOLS", "Calculator", "PointerMemory", "SearchMemory", "ShellSandbox", "ShellTool",
           "TapeMemory", "Tool", "get_tool", "register_tool", "tool_names"]
