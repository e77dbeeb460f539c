import json
import shlex

import pytest

from toolssm.cli import main
from toolssm.tasks import get_task


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    argv = ["train", "--steps", "3", "--batch-size", "2", "--model.d-model", "8", "--model.n-layers", "1",
            "--out", str(out), "--no-progress", "--train-size", "2"]  # fmt: skip
    assert main(argv) == 0
    return out


def one_line_error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("toolssm: error: "), err
    return err[0]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "--task", "nope"], "unknown task 'nope'"),
        (["train", "--model", "nope"], "unknown model 'nope'"),
        (["train", "--train-size", "-3"], "train_size=-3"),
        (["train", "--steps", "many"], "--steps"),
        (["train", "--no-such-flag"], "--no-such-flag"),
        (["demo", "--lengths", "5", "-10"], "-10"),
        (["solve", "--checkpoint", "/no/such/dir", "1+2"], "no checkpoint at /no/such/dir"),
        (["eval", "--checkpoint", "/no/such/dir"], "no checkpoint"),
        (["frobnicate"], "unknown command"),
        ([], "missing command"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(capsys, argv, needle):
    assert needle in one_line_error(capsys, argv)


def test_bad_sizes_and_problems_against_a_real_checkpoint(capsys, ckpt):
    assert "bad size '-5'" in one_line_error(capsys, ["eval", "--checkpoint", str(ckpt), "--lengths", "-5"])
    assert "bad size '<=x'" in one_line_error(capsys, ["eval", "--checkpoint", str(ckpt), "--lengths", "3", "<=x"])
    assert "bad addition problem" in one_line_error(capsys, ["solve", "--checkpoint", str(ckpt), "12-3"])
    assert "bad size '3+' for task addition" in one_line_error(capsys, ["eval", "--checkpoint", str(ckpt), "--lengths",
                                                                         "3+"])  # fmt: skip
    assert "the problem, e.g. 123+4567" in one_line_error(capsys, ["solve", "--checkpoint", str(ckpt)])


@pytest.mark.parametrize("victim", ["model.safetensors", "config.json"])
def test_corrupt_checkpoint_gives_one_line_and_leaves_the_files_alone(capsys, ckpt, tmp_path, victim):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(ckpt / "checkpoint", bad)
    (bad / victim).write_bytes(b"\x00garbage{")
    msg = one_line_error(capsys, ["solve", "--checkpoint", str(bad), "1+2"])
    assert "corrupt checkpoint" in msg
    assert (bad / victim).read_bytes() == b"\x00garbage{"  # nothing is overwritten or removed


def test_eval_writes_table_results_and_plot(capsys, ckpt, tmp_path):
    out = tmp_path / "ev"
    argv = ["eval", "--checkpoint", str(ckpt), "--lengths", "<=2", "2", "4+1", "--n-problems", "2", "--out", str(out),
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "2→" in printed  # the paper's n→m (p%) notation
    assert "\n     <=2 | " in printed  # the in-distribution row, drawn as in training
    res = json.loads((out / "results.json").read_text())
    assert [r["spec"] for r in res["results"]] == ["<=2", "2", "4+1"]
    assert all(r["n"] == 2 and 0 <= r["answer_acc"] <= 1 for r in res["results"])
    assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_solve_prints_an_answer_and_a_verdict(capsys, ckpt):
    assert main(["solve", "--checkpoint", str(ckpt), "12+34", "--trace", "--max-tokens", "40"]) == 0
    out = capsys.readouterr().out
    assert "answer:" in out and "verdict:" in out
    assert "      input  [BOS]\n" in out and ("thought  " in out or "command  " in out)  # the trace shows roles


def test_compare_is_a_sweep_whose_rerun_skips_finished_models(capsys, tmp_path):
    out = tmp_path / "cmp"
    argv = ["compare", "--models", "lstm", "gru", "--out", str(out), "--steps", "2", "--train-size", "2",
            "--lengths", "2", "3", "--n-problems", "1", "--jobs", "2", "--set", "model.d_model=8", "batch_size=2"]  # fmt: skip
    assert main(argv) == 0
    table = (out / "table.md").read_text()
    assert "| lstm | 2→" in table and "| gru | 2→" in table
    assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    records = sorted((out / "records").glob("*.jsonl"))
    assert len(records) == 2
    rec = json.loads(records[0].read_text())
    assert rec["experiment"] == "compare" and rec["commit"] and rec["torch"] and rec["toolssm"]
    assert rec["config"]["model"]["d_model"] == 8 and rec["config"]["batch_size"] == 2
    stamps = [p.stat().st_mtime_ns for p in records]
    capsys.readouterr()
    assert main(argv) == 0  # a rerun skips finished models
    assert [p.stat().st_mtime_ns for p in records] == stamps
    assert "2 of 2 runs already done; 0 to run" in capsys.readouterr().out
    other = [a if a != "3" else "4" for a in argv]  # other settings: other runs, beside the first ones
    assert main(other) == 0
    assert len(list((out / "records").glob("*.jsonl"))) == 4


@pytest.mark.parametrize("models, needle", [([], "no models to compare"), (["lstm", "lstm"], "listed twice"),
                                            (["lstm", "--lengths", "x"], "bad size 'x'"),
                                            (["lstm", "--train-size", "0"], "bad train_size=0")])
def test_compare_refuses_an_empty_or_repeated_model_list(capsys, tmp_path, models, needle):
    assert needle in one_line_error(capsys, ["compare", "--models", *models, "--out", str(tmp_path / "c")])
    assert not (tmp_path / "c").exists()


def test_a_checkpoint_from_another_trajectory_layout_is_refused(capsys, ckpt, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(ckpt / "checkpoint", old)
    cfg = json.loads((old / "config.json").read_text())
    assert cfg["task_format"] == {"input_in_context": False}
    del cfg["task_format"]  # as written before the field existed: the input was in context
    (old / "config.json").write_text(json.dumps(cfg))
    assert "retrain it" in one_line_error(capsys, ["solve", "--checkpoint", str(old), "1+2"])


@pytest.mark.parametrize(
    "name, spec",
    [("addition", "5"), ("hanoi", "4"), ("logic-graph", "6"), ("multiplication-x1", "3"), ("hanoi", "<=4"),
     ("subtraction", "<=3")],
)  # fmt: skip
def test_demo_suggests_a_problem_that_solve_can_parse(name, spec):
    from toolssm.cli import _example

    task = get_task(name)
    [text] = shlex.split(_example(task, spec))  # one shell word
    problem = task.parse(text)
    assert task.size(problem) >= 1


def test_train_with_a_time_limit_exits_124_in_one_line_and_resume_finishes_it(capsys, tmp_path):
    argv = ["train", "--steps", "2", "--batch-size", "2", "--model.d-model", "8", "--model.n-layers", "1",
            "--out", str(tmp_path), "--no-progress", "--train-size", "2"]  # fmt: skip
    assert main([*argv, "--time-limit", "1e-9"]) == 124
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("toolssm: time limit (1e-09 s of training) reached at step 1 of 2")
    assert "--resume" in err[0]
    assert main([*argv, "--resume"]) == 0
    assert json.loads((tmp_path / "checkpoint/config.json").read_text())["step"] == 2


def _files(d):
    return {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


TINY = ["--steps", "2", "--batch-size", "2", "--model.d-model", "8", "--model.n-layers", "1", "--no-progress",
        "--train-size", "2"]  # fmt: skip


@pytest.mark.parametrize(
    "flags, needle",
    [
        ([], "already holds a checkpoint (lstm on addition, step 2 of 2): pass --resume to continue it"),
        (["--resume", "--lr", "0.001", "--seed", "4"], "lr=0.003 here, 0.001 asked, seed=0 here, 4 asked"),
        (["--resume", "--model", "gru"], "model lstm here, gru asked"),
        (["--resume", "--task", "subtraction"], "task addition here, subtraction asked"),
    ],
)
def test_a_run_folder_is_never_replaced_or_continued_by_another_config(capsys, tmp_path, flags, needle):
    assert main(["train", *TINY, "--out", str(tmp_path)]) == 0
    before = _files(tmp_path)
    capsys.readouterr()
    msg = one_line_error(capsys, ["train", *TINY, "--out", str(tmp_path), *flags])
    assert needle in msg and "choose another --out" in msg
    assert _files(tmp_path) == before  # nothing written, nothing lost


def test_demo_rerun_evaluates_its_finished_run_again_and_refuses_another_config(capsys, tmp_path):
    argv = ["demo", *TINY, "--lengths", "2", "--n-problems", "2", "--out", str(tmp_path)]
    assert main(argv) == 0
    weights = (tmp_path / "checkpoint" / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "holds this demo's finished run" in out and "demo finished" in out  # its record, not a new run
    assert (tmp_path / "checkpoint" / "model.safetensors").read_bytes() == weights
    assert "seed=0 here, 2 asked" in one_line_error(capsys, [*argv, "--seed", "2"])


@pytest.mark.parametrize("task, text", [("addition", "１+２"), ("addition", "٣+٤"), ("subtraction", "５-３"),
                                        ("multiplication-x1", "１２*３"), ("hanoi", "(７)(５)"), ("hanoi", "٣ ٢")])
def test_problems_take_ascii_digits_only(task, text):
    """Python's \\d and int() take any Unicode digit; the tasks' own digit tokens are 0-9 only."""
    with pytest.raises(ValueError, match="bad"):
        get_task(task).parse(text)
    ascii_text = text.translate({ord(c): str(int(c)) for c in text if c.isdigit()})
    get_task(task).parse(ascii_text)  # the same problem in ASCII digits is fine


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "--device", "foo"], "unknown device 'foo' (choose from: auto, cpu, cuda"),
        (["train", "--threads", "-1"], "bad threads=-1"),
        (["train", "--out", ""], "empty --out"),
        (["train", "--task", "hanoi", "--train-size", "101"], "bad train_size=101: at most 100 disks"),
        (["train", "--max-len", "1"], "bad max_len=1"),
        (["demo", "--lengths"], "no sizes to test"),
        (["demo", "--n-problems", "0"], "bad --n-problems 0"),
        (["demo", "--eval-batch-size", "0"], "bad --eval-batch-size 0"),
        (["demo", "--eval-threads", "-1"], "bad threads=-1"),
        (["reproduce", "fig2-addition", "--set", "steps=x", "--dry-run"], "bad setting steps='x': expected an integer"),
        (["reproduce", "fig2-addition", "--set", "model.d_model=x", "--dry-run"], "expected an integer or null"),
        (["reproduce", "fig2-addition", "--n-problems", "0", "--dry-run"], "bad --n-problems 0"),
        (["reproduce", "fig2-addition", "--device", "foo", "--dry-run"], "unknown device 'foo'"),
    ],
)
def test_bad_flags_are_refused_in_one_line_before_any_work(capsys, tmp_path, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)  # the default run folders would land here
    assert needle in one_line_error(capsys, argv)
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_bad_flags_against_a_real_checkpoint_are_refused_before_any_work(capsys, ckpt, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for argv, needle in [
        (["eval", "--checkpoint", str(ckpt), "--lengths"], "no sizes to test"),
        (["eval", "--checkpoint", str(ckpt), "--procs", "0"], "bad --procs 0"),
        (["eval", "--checkpoint", str(ckpt), "--lengths", "2", "--out", str(afile)], "is a file, not a folder"),
        (["solve", "--checkpoint", str(ckpt), "--device", "foo", "1+2"], "unknown device 'foo'"),
        (["train", "--out", str(afile / "sub")], "is a file, not a folder"),
        (["reproduce", "fig2-addition", "--out", str(afile), "--dry-run"], "is a file, not a folder"),
    ]:
        assert needle in one_line_error(capsys, argv), argv
        assert "evaluating" not in capsys.readouterr().out
    assert afile.read_text() == "x"


def test_out_of_memory_is_one_line(capsys, monkeypatch):
    import toolssm.cli as cli

    def huge(cfg):
        raise MemoryError

    monkeypatch.setattr(cli, "train", huge)
    assert "out of memory" in one_line_error(capsys, ["train"])


def test_a_checkpoint_with_impossible_sizes_is_reported_as_corrupt(capsys, ckpt, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(ckpt / "checkpoint", bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["model"]["d_model"] = -1
    (bad / "config.json").write_text(json.dumps(cfg))
    assert "corrupt checkpoint" in one_line_error(capsys, ["eval", "--checkpoint", str(bad), "--lengths", "2"])


def test_report_refuses_an_empty_results_file(capsys, tmp_path):
    (tmp_path / "results.jsonl").write_text("")
    assert "results.jsonl is empty" in one_line_error(capsys, ["report", str(tmp_path)])
    assert not (tmp_path / "report.md").exists()


@pytest.mark.parametrize("text, needle", [("garbage", "not JSON"), ('{"a": 1}', "not a sweep record"), ("[1]", "not a sweep")])
def test_report_names_a_bad_record_in_one_line(capsys, tmp_path, text, needle):
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "x.jsonl").write_text(text)
    msg = one_line_error(capsys, ["report", str(tmp_path)])
    assert needle in msg and "x.jsonl" in msg
