"""Tool oracles. Each takes command tokens and answers with observation tokens."""

from toolssm.tools.base import ERR, Tool
from toolssm.tools.calculator import CALC, Calculator
from toolssm.tools.pointer import EDGE, PointerMemory

__all__ = ["CALC", "EDGE", "ERR", "Calculator", "PointerMemory", "Tool"]
