"""A sweep record's results as `LengthResult`s, and its ``n→m (p%)`` cell: read by sweep (its progress
log) and by report (its tables), so below both.

A record is the JSON that `toolssm.sweep.execute` writes for a finished run; its ``results`` are evaluate's
rows, and ``skipped`` lists the sizes the evaluation did not run (it stopped below 5%).
"""

from __future__ import annotations

from typing import Any

from toolssm.evaluate import LengthResult
from toolssm.plots import paper_cell


def results(rec: dict[str, Any]) -> list[LengthResult]:
    """A record's results, ``"<=N"`` rows (drawn as in training) included, with each skipped size as a 0%
    point (n=0)."""
    from toolssm.tasks import get_task

    res = [LengthResult(**r) for r in rec["results"]]
    if rec.get("skipped"):
        task = get_task(rec["task"])
        res += [LengthResult(s, task.spec_size(s), 0, 0.0, 0.0, None, 0, 0.0, 0.0) for s in rec["skipped"]]
    return res


def curve(rec: dict[str, Any]) -> list[LengthResult]:
    """A record's points on the length axis: `results` without the ``"<=N"`` rows, which are not on it."""
    return [r for r in results(rec) if not r.drawn_as_in_training]


def run_cell(rec: dict[str, Any]) -> str:
    return paper_cell(rec["train_size"], curve(rec))
