"""Where a result came from: the package and torch versions, the git commit, and the seeds.

`provenance` is written into every checkpoint's ``config.json`` (`toolssm.checkpoint.save_checkpoint`) and every
evaluation's ``results.json`` (`toolssm.evaluate.save_results`); sweep records carry the same commit.
"""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any


def git_commit() -> str:
    """HEAD of the git checkout this package runs from (``+dirty`` with uncommitted changes to tracked files);
    ``unknown`` outside a checkout (an installed wheel) or without git."""
    try:
        here = Path(__file__).resolve().parent
        git = {"cwd": here, "capture_output": True, "text": True, "timeout": 10, "check": False}
        sha = subprocess.run(["git", "rev-parse", "HEAD"], **git)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], **git)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if sha.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(**seeds: Any) -> dict[str, Any]:
    """``{"toolssm", "torch", "python", "commit", "seeds"}``; ``seeds``: the run's seeds by name (training's
    ``seed``, an evaluation's ``eval_seed``)."""
    import torch

    from toolssm import __version__

    return {"toolssm": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "commit": git_commit(), "seeds": seeds}  # fmt: skip
