"""Tasks: a seeded generator, an expert trajectory, and a verifier each."""

from toolssm.tasks import addition, hanoi, logic_graph  # noqa: F401  (registers)
from toolssm.tasks.base import Task, Verdict, get_task, register, task_names

__all__ = ["Task", "Verdict", "get_task", "register", "task_names"]
