"""Provenance in every checkpoint's config.json and every evaluation's results.json; Wilson 95% intervals in the
tables and as bands in the plots (the demo's among them)."""

import json
import math
import re

import pytest

from toolssm import __version__
from toolssm.cli import main
from toolssm.evaluate import LengthResult, wilson
from toolssm.plots import format_table
from toolssm.provenance import git_commit


def test_wilson_interval_matches_its_closed_forms():
    z2 = 1.959963984540054**2
    assert wilson(20, 20) == pytest.approx((20 / (20 + z2), 1.0))  # n/n: lower bound n / (n + z^2)
    assert wilson(0, 20) == pytest.approx((0.0, z2 / (20 + z2)))  # 0/n: upper bound z^2 / (n + z^2)
    lo, hi = wilson(10, 20)
    assert lo + hi == pytest.approx(1.0) and (lo, hi) == pytest.approx((0.2993, 0.7007), abs=1e-4)
    scipy_stats = pytest.importorskip("scipy.stats")
    for k, n in ((3, 20), (17, 20), (1, 7), (50, 100)):
        ci = scipy_stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)
    assert wilson(0, 0) == (0.0, 1.0)


def test_the_eval_table_has_an_interval_column():
    rows = [LengthResult("5", 5, 20, 1.0, 1.0, 0.99, 0, 10.0, 0.1), LengthResult("100", 100, 20, 0.5, 0.4, None, 2,
            900.0, 1.0)]  # fmt: skip
    table = format_table(rows, train_size=5)
    assert "95% CI" in table.splitlines()[1]
    assert re.search(r"\|\s+100%\s+\|\s+84–100%\s+\|", table) and re.search(r"\|\s+50%\s+\|\s+30–70%\s+\|", table)


def test_demo_writes_provenance_intervals_and_bands(tmp_path, monkeypatch, capsys):
    import matplotlib.axes

    bands = []
    real = matplotlib.axes.Axes.fill_between

    def spy(self, x, y1, y2=0, **kw):
        if len(x):
            bands.append((list(x), list(y1), list(y2)))
        return real(self, x, y1, y2, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "fill_between", spy)
    out = tmp_path / "demo"
    assert main(["demo", "--model", "lstm", "--steps", "2", "--warmup", "1", "--batch-size", "4", "--seed", "3",
                 "--lengths", "5", "8", "--n-problems", "3", "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    commit = git_commit()
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", commit)  # this test runs in a git checkout
    config = json.loads((out / "checkpoint" / "config.json").read_text())
    prov = config["provenance"]
    assert prov["toolssm"] == __version__ and prov["commit"] == commit and prov["seeds"] == {"seed": 3}
    import torch

    assert prov["torch"] == torch.__version__
    results = json.loads((out / "eval" / "results.json").read_text())
    assert results["provenance"]["commit"] == commit and results["provenance"]["torch"] == torch.__version__
    assert results["provenance"]["seeds"] == {"eval_seed": 1234, "train_seed": 3}
    table = (out / "eval" / "table.txt").read_text()
    assert "95% CI" in table
    for r in results["results"]:  # each size's interval, in the table and as the plot's band
        lo, hi = wilson(round(r["answer_acc"] * r["n"]), r["n"])
        assert f"{lo:.0%}–{hi:.0%}".replace("%–", "–") in table
        assert any(math.isclose(b[1][b[0].index(r["size"])], lo) and math.isclose(b[2][b[0].index(r["size"])], hi)
                   for b in bands if r["size"] in b[0])  # fmt: skip
    assert (out / "eval" / "accuracy.png").is_file()
