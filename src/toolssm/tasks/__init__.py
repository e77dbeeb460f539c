"""Tasks: a seeded generator, an expert trajectory, and a verifier each."""

from toolssm.tasks import (  # noqa: F401  (registers)
    addition,
    addition_ablations,
    codefix,
    hanoi,
    logic_graph,
    multiplication,
    oolong,
    subtraction,
    turing,
)
from toolssm.tasks.base import TASKS, Task, Verdict, answered, get_task, register, task_names

__all__ = ["TASKS", "Task", "Verdict", "answered", "get_task", "register", "task_names"]
