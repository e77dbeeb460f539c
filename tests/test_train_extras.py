"""Evaluation during training (--eval-every), kept checkpoints, the loggers, and --config files."""

import json
import subprocess
import sys

import pytest
import torch

from toolssm.checkpoint import load_checkpoint
from toolssm.cli import main
from toolssm.loggers import read_log
from toolssm.train import TrainConfig, load_config_file, train

TINY = dict(steps=12, batch_size=4, log_every=3, save_every=6, warmup=2, progress=False, threads=1)


def _cfg(tmp_path, name, **kw):
    cfg = TrainConfig(out=str(tmp_path / name), **{**TINY, **kw})
    cfg.model.d_model, cfg.model.n_layers = 16, 1
    return cfg


def _weights(out):
    return load_checkpoint(out).model.state_dict()


def test_eval_every_writes_rows_per_size_and_leaves_training_unchanged(tmp_path):
    plain = train(_cfg(tmp_path, "plain"))
    evald = train(_cfg(tmp_path, "eval", eval_every=3, eval_sizes=("3", "8"), eval_problems=2, keep_checkpoints=True))
    rows = read_log(tmp_path / "eval" / "log.jsonl")
    ev = [r for r in rows if "eval_size" in r]
    assert [(r["step"], r["eval_size"]) for r in ev] == [(s, z) for s in (3, 6, 9, 12) for z in ("3", "8")]
    for r in ev:
        assert 0 <= r["answer_acc"] <= 1 and 0 <= r["trajectory_acc"] <= 1 and 0 <= r["token_acc"] <= 1
        assert r["n"] == 2
    # the training rows, and the weights, are those of the run without evaluation
    strip = lambda rs: [(r["step"], r["loss"], r["lr"], r["grad_norm"]) for r in rs if "eval_size" not in r]  # noqa: E731
    assert strip(rows) == strip(read_log(tmp_path / "plain" / "log.jsonl"))
    a, b = _weights(plain.parent), _weights(evald.parent)
    assert all(torch.equal(a[k], b[k]) for k in a)
    kept = sorted(p.name for p in (tmp_path / "eval" / "checkpoints").iterdir())
    assert kept == ["step-0000003", "step-0000006", "step-0000009", "step-0000012"]
    assert load_checkpoint(tmp_path / "eval" / "checkpoints" / "step-0000009").step == 9
    assert (tmp_path / "eval" / "eval_curve.png").stat().st_size > 0


def test_log_without_flags_keeps_its_rows(tmp_path):
    train(_cfg(tmp_path, "plain"))
    rows = read_log(tmp_path / "plain" / "log.jsonl")
    assert [r["step"] for r in rows] == [3, 6, 9, 12]
    assert all(set(r) == {"step", "loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s"} for r in rows)
    assert not (tmp_path / "plain" / "checkpoints").exists() and not (tmp_path / "plain" / "tensorboard").exists()


def test_tensorboard_scalars_equal_the_jsonl_rows(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is a dev extra")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(_cfg(tmp_path, "tb", eval_every=6, eval_sizes=("3",), eval_problems=2, logger=("jsonl,tensorboard",)))
    acc = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    acc.Reload()
    rows = read_log(tmp_path / "tb" / "log.jsonl")
    loss = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    got = acc.Scalars("train/loss")
    assert [e.step for e in got] == [s for s, _ in loss]
    assert [e.value for e in got] == pytest.approx([v for _, v in loss], rel=1e-6)  # stored as float32
    tok = [(r["step"], r["token_acc"]) for r in rows if r.get("eval_size") == "3"]
    assert len(tok) == 2
    got = acc.Scalars("eval/3/token_acc")
    assert [e.step for e in got] == [s for s, _ in tok]
    assert [e.value for e in got] == pytest.approx([v for _, v in tok], rel=1e-6)


def test_report_draws_accuracy_against_step(tmp_path, capsys):
    train(_cfg(tmp_path, "run", eval_every=6, eval_sizes=("3", "8"), eval_problems=2))
    assert main(["report", str(tmp_path / "run")]) == 0
    text = (tmp_path / "run" / "eval_curve.md").read_text()
    assert "| step | size 3 | size 8 |" in text and "\n| 6 |" in text and "\n| 12 |" in text
    assert (tmp_path / "run" / "eval_curve.png").is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--eval-every", "-1"], "bad eval_every=-1"),
        (["--eval-sizes", "5"], "go with --eval-every"),
        (["--eval-every", "5", "--eval-sizes", "x"], "x"),
        (["--logger", "jsonl,nope"], "bad logger 'nope'"),
        (["--eval-every", "5", "--eval-problems", "0"], "bad eval_problems=0"),
    ],
)
def test_bad_eval_and_logger_flags_are_one_line_errors(tmp_path, capsys, argv, message):
    assert main(["train", "--out", str(tmp_path / "r"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("toolssm: error:") and message in err and "\n" not in err
    assert not (tmp_path / "r").exists()


def test_config_file_round_trip_with_flags_on_top(tmp_path):
    cfg = _cfg(tmp_path, "a", lr=2e-3, seed=3)
    train(cfg)
    saved = tmp_path / "a" / "train_config.json"
    loaded = load_config_file(saved)
    assert loaded == cfg
    # flags go on top of the file; the rest comes from it
    from toolssm.cli import parse

    got, _ = parse(["train", "--config", str(saved), "--out", str(tmp_path / "b"), "--seed", "4"])
    assert got.seed == 4 and got.out == str(tmp_path / "b")
    assert got.lr == 2e-3 and got.model.d_model == 16 and got.steps == 12


def test_config_file_toml_and_errors(tmp_path, capsys):
    toml = tmp_path / "c.toml"
    toml.write_text('steps = 7\nlr = 1\neval_sizes = ["5", "10"]\n[model]\narch = "gru"\nd_model = 8\n')
    cfg = load_config_file(toml)
    assert (cfg.steps, cfg.lr, cfg.eval_sizes, cfg.model.arch, cfg.model.d_model) == (7, 1.0, ("5", "10"), "gru", 8)
    cases = {
        "unknown.json": ('{"stepz": 3}', "unknown field 'stepz'"),
        "type.json": ('{"steps": "many"}', "steps must be int"),
        "nested.json": ('{"model": {"widht": 3}}', "unknown field 'model.widht'"),
        "broken.json": ("{", "does not parse"),
        "list.json": ("[1]", "expected a table of fields"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        assert main(["train", "--config", str(tmp_path / name), "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("toolssm: error:") and message in err and name in err and "\n" not in err, err
    assert main(["eval", "--config", str(toml), "--checkpoint", "x"]) == 2
    assert "for train and demo" in capsys.readouterr().err


def test_config_flag_from_the_command_line(tmp_path):
    """The console script path: --config with another flag on top, in a fresh process."""
    (tmp_path / "c.json").write_text(json.dumps({"steps": 2, "batch_size": 2, "log_every": 1, "progress": False,
                                                 "model": {"d_model": 8, "n_layers": 1}}))  # fmt: skip
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "toolssm.cli", "train", "--config", str(tmp_path / "c.json"),
                        "--out", str(out), "--threads", "1"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert [row["step"] for row in read_log(out / "log.jsonl")] == [1, 2]
    assert json.loads((out / "train_config.json").read_text())["model"]["d_model"] == 8
