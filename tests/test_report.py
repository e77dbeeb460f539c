"""Reports from records alone: best of seeds, all-seeds median and fraction, paper numbers, plots."""

import json

import pytest

from toolssm.cli import main
from toolssm.records import run_cell
from toolssm.report import report, summarize


def rec(row, seed, accs, *, lr=1e-3, skipped=(), experiment="fig2-addition", sizes=("5", "10", "100", "1000")):
    done = [s for s in sizes if s not in skipped]
    return {
        "run_id": f"{row}-s{seed}-{lr}", "experiment": experiment, "panel": "", "row": row, "task": "addition",
        "train_size": 5, "seed": seed, "config": {"task": "addition", "lr": lr, "seed": seed}, "lengths": list(sizes),
        "n_problems": 20, "skipped": list(skipped), "wall_s": 1.0,
        "results": [{"spec": s, "size": int(s.lstrip("<=")), "n": 20, "answer_acc": a, "trajectory_acc": a, "token_acc": None,
                     "truncated": 0, "tokens_per_problem": 1.0, "seconds": 0.1} for s, a in zip(done, accs)],
    }  # fmt: skip


@pytest.mark.parametrize(
    "records, best_seed, best_cell, median_cell, worst_cell, n_gen",
    [
        # three seeds of one config: the best is seed 2, the median is seed 0's curve, 2 of 3 generalize
        ([rec("lstm", 0, [1, 1, 1, 0.5]), rec("lstm", 1, [1, 1, 0.9, 0.0]), rec("lstm", 2, [1, 1, 1, 1])],
         2, "5→1K (100%)", "5→1K (50%)", "5→100 (90%)", 1),
        # the best config wins over the grid; the all-seeds view uses that config's seeds only
        ([rec("lstm", 0, [1, 0.2, 0.0, 0.0]), rec("lstm", 0, [1, 1, 1, 0.95], lr=3e-3),
          rec("lstm", 1, [1, 1, 0.1, 0.0], lr=3e-3)], 0, "5→1K (95%)", "5→1K (48%)", "5→100 (10%)", 1),
        # skipped sizes count as 0%
        ([rec("pythia", 0, [1, 0.0], skipped=("100", "1000"))], 0, "5→5 (100%)", "5→5 (100%)", "5→5 (100%)", 0),
    ],
)
def test_best_of_seeds_and_all_seeds(records, best_seed, best_cell, median_cell, worst_cell, n_gen):
    (row,) = summarize(records)
    assert row.best["seed"] == best_seed and row.best_cell == best_cell
    assert row.median_cell == median_cell and row.worst_cell == worst_cell
    assert row.n_generalize == n_gen and row.n_runs == len(records)


def test_report_writes_a_table_with_the_papers_numbers_and_a_plot(tmp_path, capsys):
    for r in [rec("mamba", 0, [1, 1, 1, 1]), rec("pythia", 0, [0.3, 0.0], skipped=("100", "1000"))]:
        (tmp_path / "records").mkdir(exist_ok=True)
        (tmp_path / "records" / f"{r['run_id']}.jsonl").write_text(json.dumps(r) + "\n")
    assert main(["report", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "| mamba | 5→1K (100%) | 5→1K (100%) |" in text  # ours, then the paper's
    assert "| pythia | 5→5 (30%) | ≈0% just past 5 |" in text
    assert "| 30% (15–52%) | 0% (0–16%) | – | – |" in text
    assert (tmp_path / "fig2-addition.png").read_bytes()[:4] == b"\x89PNG"
    assert "5→1K (100%)" in capsys.readouterr().out


def test_report_reads_results_jsonl_alone(tmp_path):
    (tmp_path / "results.jsonl").write_text(json.dumps(rec("gru", 3, [1, 1, 0.8, 0.8])) + "\n")
    text, files = report(tmp_path, plots=False)
    assert "| gru | 5→1K (80%) | 5→1K (≈80%) |" in text and files == [tmp_path / "report.md"]


def test_run_cell_and_an_empty_folder(tmp_path, capsys):
    assert run_cell(rec("lstm", 0, [1, 0.04, 0, 0])) == "5→5 (100%)"
    assert main(["report", str(tmp_path)]) == 2
    assert "no sweep records" in capsys.readouterr().err


def test_in_distribution_column_is_shown_but_not_on_the_length_axis(tmp_path):
    """A '<=5' result (drawn as in training) gets its own column; the n→m cell and the curve ignore it."""
    r = rec("direct", 0, [0.99, 0.97, 0.0], experiment="d7-addition-ablations", sizes=("<=5", "5", "6"))
    (tmp_path / "results.jsonl").write_text(json.dumps(r) + "\n")
    text, _ = report(tmp_path, plots=False)
    header = next(line for line in text.splitlines() if line.startswith("| row"))
    assert header.endswith("| <=5 as trained | 5 | 6 |"), header
    assert "| direct | 5→5 (97%) |" in text and "| 99% (84–100%) | 97% (76–99%) | 0% (0–16%) |" in text
    assert "drawn as in training" in text
    (row,) = summarize([r])
    assert [x.spec for x in row.median_curve()] == ["5", "6"]


def test_many_rows_are_drawn_as_small_multiples_one_panel_each(tmp_path):
    """Figure 2 has nine rows, most at 100%: on one axes they would coincide, so each gets its own panel."""
    import matplotlib.image

    rows = ["mamba", "lstm", "gru", "mamba2", "pythia", "mistral"]
    (tmp_path / "records").mkdir()
    for k, row in enumerate(rows):
        r = rec(row, 0, [1, 1, 1, 1] if k < 4 else [1, 0.0], skipped=() if k < 4 else ("100", "1000"))
        (tmp_path / "records" / f"{r['run_id']}.jsonl").write_text(json.dumps(r) + "\n")
    _, files = report(tmp_path)
    png = tmp_path / "fig2-addition.png"
    assert png in files
    h, w = matplotlib.image.imread(png).shape[:2]
    assert h > 600 and w > 1000  # a 2 x 3 grid, not one 6.4 x 4.2 inch axes (768 x 504 pixels)


def test_sizes_a_run_did_not_test_are_not_drawn_as_measured_zeros():
    """The stop rule leaves Pythia's 100 and 1,000 digits untested: the line must end at 10 digits, and the
    untested sizes get their own crosses, not markers on the accuracy line (they used to sit on it at 0%)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from toolssm.plots import _draw_curves
    from toolssm.records import curve

    fig, ax = plt.subplots()
    _, _, unrun = _draw_curves(ax, {"pythia": curve(rec("pythia", 0, [1, 0.0], skipped=("100", "1000")))}, 5)
    plt.close(fig)
    solid = [ln for ln in ax.lines if ln.get_linestyle() == "-"]
    assert len(solid) == 1 and list(solid[0].get_xdata()) == [5, 10]
    crosses = [ln for ln in ax.lines if ln.get_gid() == "not-run"]
    assert unrun and len(crosses) == 1 and list(crosses[0].get_xdata()) == [100, 1000]
