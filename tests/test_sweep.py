"""Sweeps: grids, one record per finished run, and resumability under SIGKILL and Ctrl-C."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from toolssm.sweep import Run, expand_grid, load_records, parse_overrides, record_path, sweep, write_atomic


def tiny_run(row="lstm", seed=0, **kw):
    train = {"task": "addition", "train_size": 2, "steps": 4, "batch_size": 2, "seed": seed, "save_every": 2,
             "model": {"arch": row, "d_model": 8, "n_layers": 1}}  # fmt: skip
    return Run(**{"experiment": "t", "row": row, "train": train, "lengths": ("2",), "n_problems": 1, **kw})


@pytest.mark.parametrize(
    "grid, n, first",
    [
        ({}, 1, {"lr": 1.0, "model": {"arch": "lstm"}}),
        ({"lr": [1, 2], "batch_size": [8, 16, 32]}, 6, {"lr": 1, "batch_size": 8, "model": {"arch": "lstm"}}),
        ({"model.arch": ["gru", "mamba"], "seed": [0, 1]}, 4, {"lr": 1.0, "seed": 0, "model": {"arch": "gru"}}),
    ],
)
def test_grid_expansion(grid, n, first):
    base = {"lr": 1.0, "model": {"arch": "lstm"}}
    out = expand_grid(base, grid)
    assert len(out) == n and out[0] == first
    assert len({json.dumps(d, sort_keys=True) for d in out}) == n  # all distinct
    assert base == {"lr": 1.0, "model": {"arch": "lstm"}}  # the base is not modified


def test_run_ids_are_stable_readable_and_change_with_the_result_not_the_bookkeeping():
    a = tiny_run()
    assert a.run_id == tiny_run().run_id and a.run_id.startswith("lstm-s0-")
    assert tiny_run(seed=1).run_id != a.run_id
    assert tiny_run(n_problems=2).run_id != a.run_id
    b = tiny_run(cost=9.0)
    b.train["device"] = "cuda"
    b.train["time_limit"] = 60.0  # a resumed run is the run that would have happened
    assert b.run_id == a.run_id  # where and how fast it runs does not change the result


@pytest.mark.parametrize("bad", ["steps", "=3", "nope=3", "model=3", "model.nope=1"])
def test_bad_overrides_are_refused(bad):
    with pytest.raises(ValueError, match="bad setting"):
        parse_overrides([bad])


def test_overrides_parse_json_values():
    assert parse_overrides(["steps=3", "lr=1e-3", "model.arch=gru", "mix=[\"addition:0.5\"]"]) == {
        "steps": 3, "lr": 1e-3, "model.arch": "gru", "mix": ["addition:0.5"]}  # fmt: skip


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.parametrize("kept", [True, False])
def test_spawned_workers_get_the_parents_allocator_setting_and_records_say_which(tmp_path, monkeypatch, kept):
    """`toolssm reproduce --jobs 2` trains in spawned processes: they keep freed memory iff the CLI did."""
    import toolssm.runtime as runtime

    for k in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD", "TOOLSSM_MALLOC"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(runtime, "_kept", kept)
    recs = sweep([tiny_run("lstm"), tiny_run("gru")], tmp_path, jobs=2, log=lambda s: None)
    assert [r["malloc"] for r in recs] == ["kept" if kept else "system"] * 2
    assert all(r["jobs"] == 2 and r["threads"] == 1 for r in recs)


def test_a_sweep_writes_one_record_per_run_and_skips_done_runs(tmp_path):
    runs = [tiny_run("lstm"), tiny_run("gru")]
    torch.set_num_threads(2)  # a caller's setting: the runs still get one thread, as in a jobs > 1 worker
    try:
        recs = sweep(runs, tmp_path, jobs=1, log=lambda s: None)
        assert torch.get_num_threads() == 2  # and the caller's setting comes back
    finally:
        torch.set_num_threads(1)
    assert all(r["threads"] == 1 for r in recs)  # so a record does not depend on --jobs
    assert [r["run_id"] for r in recs] == [r.run_id for r in runs]
    rec = recs[0]
    assert rec["seed"] == 0 and rec["config"]["steps"] == 4 and rec["commit"]
    assert rec["results"][0]["spec"] == "2" and 0 <= rec["results"][0]["token_acc"] <= 1
    assert rec["wall_s"] > 0
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["run_id"] for x in lines) == sorted(r.run_id for r in runs)
    stamp = record_path(tmp_path, runs[0]).stat().st_mtime_ns
    said = []
    sweep(runs, tmp_path, jobs=1, log=said.append)
    assert said[0].startswith("2 of 2 runs already done")
    assert record_path(tmp_path, runs[0]).stat().st_mtime_ns == stamp


def test_a_half_written_record_is_not_a_record(tmp_path):
    run = tiny_run()
    write_atomic(record_path(tmp_path, run), json.dumps({"run_id": "x", "experiment": "t", "row": "lstm",
                                                         "results": []}) + "\n")  # fmt: skip
    (tmp_path / "records" / f".{run.run_id}.jsonl.123.tmp").write_text('{"run_id": "tru')  # a crash mid-write
    assert [r["run_id"] for r in load_records(tmp_path)] == ["x"]


KILL_ARGV = ["reproduce", "fig2-addition", "--rows", "lstm", "gru", "--seeds", "0", "1", "--lengths", "2",
             "--n-problems", "1", "--jobs", "1", "--set", "steps=40", "save_every=20", "batch_size=2", "train_size=2",
             "model.d_model=8", "model.n_layers=1"]  # fmt: skip


def _start(out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "toolssm.cli", *KILL_ARGV, "--out", str(out)], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip


def _records(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (out / "records").glob("*.jsonl")} if (out / "records").is_dir() else {}


def _in_training(out: Path) -> list[str]:
    """Runs with a checkpoint and no record yet."""
    done = {n.removesuffix(".jsonl") for n in _records(out)}
    return [p.parent.parent.name for p in (out / "runs").glob("*/checkpoint/config.json")
            if p.parent.parent.name not in done] if (out / "runs").is_dir() else []  # fmt: skip


def test_a_sweep_killed_with_sigkill_loses_no_finished_run_and_redoes_none(tmp_path):
    out = tmp_path / "sweep"
    proc = _start(out)
    deadline = time.monotonic() + 120
    # the kill lands inside a run that has saved a checkpoint but has no record, after one run has finished: a
    # fixed sleep after the first record could overshoot every remaining run on a fast machine (CI, 2026-12-03)
    while not (_records(out) and _in_training(out)) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _records(out)
    assert 1 <= len(before) < 4, "the kill must land between the first and the last run"

    proc = _start(out)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log
    assert f"{len(before)} of 4 runs already done; {4 - len(before)} to run" in log
    after = _records(out)
    assert len(after) == 4
    assert all(after[name] == data for name, data in before.items())  # not lost, not redone
    ids = [json.loads(x)["run_id"] for x in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted(n.removesuffix(".jsonl") for n in after)
    assert (out / "report.md").is_file() and (out / "fig2-addition.png").is_file()


def test_a_time_limited_sweep_stops_its_runs_and_reruns_continue_them_to_the_same_records(tmp_path):
    from toolssm.train import TimeLimitReached

    ref = sweep([tiny_run("lstm")], tmp_path / "ref", jobs=1, log=lambda s: None)[0]
    run = tiny_run("lstm")
    run.train["time_limit"] = 1e-9  # every piece trains one step
    said = []
    for piece in range(1, 4):
        with pytest.raises(TimeLimitReached, match="1 run.s. stopped at their time limit"):
            sweep([run], tmp_path / "cut", jobs=1, log=said.append)
        assert not record_path(tmp_path / "cut", run).exists()
        ckpt = tmp_path / "cut" / "runs" / run.run_id / "checkpoint" / "config.json"
        assert json.loads(ckpt.read_text())["step"] == piece
    assert any(line.startswith(f"  stopped {run.run_id}: time limit") for line in said)
    rec = sweep([run], tmp_path / "cut", jobs=1, log=lambda s: None)[0]  # the fourth step, then the evaluation
    drop = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert rec["run_id"] == ref["run_id"] and drop(rec["results"]) == drop(ref["results"])
    from safetensors.torch import load_file

    wa, wb = (load_file(tmp_path / d / "runs" / run.run_id / "checkpoint/model.safetensors") for d in ("ref", "cut"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


INT_ARGV = ["reproduce", "fig2-addition", "--rows", "lstm", "gru", "--seeds", "0", "--lengths", "2",
            "--n-problems", "1", "--jobs", "2", "--set", "steps=1000000", "save_every=1000000", "log_every=1",
            "batch_size=2", "train_size=2", "model.d_model=8", "model.n_layers=1"]  # fmt: skip


def _terminal_sigint() -> None:
    """The child starts with Ctrl-C's default action, as from a terminal, even when this test process was started
    with SIGINT ignored (a background job of a non-interactive shell, `nohup`), which the child would inherit."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("target", ["group", "parent"])
def test_ctrl_c_on_a_parallel_sweep_saves_each_run_in_training_and_exits(tmp_path, target):
    """Ctrl-C at a terminal signals the whole process group; `kill -INT` only the parent, which passes it on."""
    out = tmp_path / "sweep"
    proc = subprocess.Popen(
        [sys.executable, "-m", "toolssm.cli", *INT_ARGV, "--out", str(out)], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=_terminal_sigint,
    )  # fmt: skip
    logs = lambda: list((out / "runs").glob("*/log.jsonl")) if (out / "runs").is_dir() else []  # noqa: E731
    try:
        deadline = time.monotonic() + 120
        while not (len(logs()) == 2 and all(f.read_text() for f in logs())) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[0]
            time.sleep(0.05)
        assert len(logs()) == 2, "both runs must be training before the interrupt"
        if target == "group":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGINT)
        log, _ = proc.communicate(timeout=120)
    finally:  # a sweep of a million steps must not outlive a failed test
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, log
    assert "toolssm: interrupted: the runs in training saved a checkpoint" in log
    for f in logs():  # each run saved where it stopped, although its save_every never came
        done = max(json.loads(x)["step"] for x in f.read_text().splitlines())
        step = json.loads((f.parent / "checkpoint" / "config.json").read_text())["step"]
        assert 1 <= step and step >= done
    assert not _records(out)  # no run was finished, so none has a record


#: record fields that say where and when a run happened, not what it found
HOST_AND_TIME = ("host", "finished_at", "started_at", "ended_at", "train_s", "eval_s", "wall_s")


def _result_fields(rec: dict) -> dict:
    out = {k: v for k, v in rec.items() if k not in HOST_AND_TIME}
    out["results"] = [{k: v for k, v in r.items() if k != "seconds"} for r in rec["results"]]
    return out


def test_a_submitit_sweep_writes_the_in_process_records_and_a_rerun_redoes_exactly_the_missing(tmp_path):
    """``--launcher submitit`` (its local executor here; SLURM on a cluster): the same records as the local
    process pool, apart from host and time; a sweep stopped halfway redoes only the runs without a record."""
    pytest.importorskip("submitit", reason="submitit is the cluster extra (in dev)")
    from toolssm.sweep import Launcher

    runs = [tiny_run("lstm"), tiny_run("gru"), tiny_run("lstm", seed=1), tiny_run("gru", seed=1)]
    local = sweep(runs, tmp_path / "local", jobs=2, log=lambda s: None)
    launcher = Launcher("submitit", cluster="local", timeout_min=10)
    said = []
    cluster = sweep(runs, tmp_path / "cluster", jobs=2, log=said.append, launcher=launcher)
    assert said[0] == "0 of 4 runs already done; 4 to run, 2 at a time"
    assert [_result_fields(r) for r in cluster] == [_result_fields(r) for r in local]
    assert list((tmp_path / "cluster" / "submitit").iterdir())  # the jobs' logs

    # halfway: two runs' records are there, two are not (as after a kill between them)
    keep = {runs[0].run_id, runs[2].run_id}
    for r in runs:
        if r.run_id not in keep:
            record_path(tmp_path / "cluster", r).unlink()
    stamps = {r.run_id: record_path(tmp_path / "cluster", r).stat().st_mtime_ns for r in runs if r.run_id in keep}
    said.clear()
    again = sweep(runs, tmp_path / "cluster", jobs=2, log=said.append, launcher=launcher)
    assert said[0] == "2 of 4 runs already done; 2 to run, 2 at a time"
    assert sum(line.lstrip().startswith("[") for line in said) == 2  # exactly two runs reported as run
    assert all(record_path(tmp_path / "cluster", r).stat().st_mtime_ns == stamps[r.run_id]
               for r in runs if r.run_id in keep)  # fmt: skip
    assert [_result_fields(r) for r in again] == [_result_fields(r) for r in local]


def test_reproduce_refuses_cluster_flags_without_the_launcher(capsys):
    from toolssm.cli import main

    assert main(["reproduce", "fig2-addition", "--partition", "gpu", "--dry-run"]) == 2
    assert "go with --launcher submitit" in capsys.readouterr().err
