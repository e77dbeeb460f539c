"""Tasks: a seeded generator, an expert trajectory, and a verifier each."""

from toolssm.tasks import addition, addition_ablations, multiplication, subtraction  # noqa: F401  (registers)
from toolssm.tasks.base import Task, Verdict, get_task, register, task_names

__all__ = ["Task", "Verdict", "get_task", "register", "task_names"]
