"""Code fixing (paper §3.3, App. E): thread a variable through a generated Python codebase, with a
sandboxed shell as the tool. See docs/tasks/codefix.md."""

from toolssm.tasks.codefix.task import Codefix, CodefixSingle

__all__ = ["Codefix", "CodefixSingle"]
