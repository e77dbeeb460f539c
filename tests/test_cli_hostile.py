"""Hostile input to the CLI and the run folder (issue: harden the CLI): each case ends in one line and exit 2 before
any work starts, and leaves every file as it was."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import toolssm.limits as limits
from toolssm.cli import main
from toolssm.tasks import get_task

REAL_AVAILABLE_MEMORY = limits.available_memory
TINY = ["--steps", "3", "--batch-size", "2", "--model.d-model", "8", "--model.n-layers", "1", "--no-progress",
        "--train-size", "2"]  # fmt: skip


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", *TINY, "--out", str(out)]) == 0
    return out


@pytest.fixture(autouse=True)
def eight_gib(monkeypatch):
    """The memory floors compare with 8 GiB here, whatever this machine has free, so the refusals are the same
    everywhere."""
    monkeypatch.setattr(limits, "available_memory", lambda: 8 * 2**30)


@pytest.fixture
def no_work(monkeypatch):
    """Training and evaluation fail the test if they start: every refusal here must come before them."""
    import toolssm.cli as cli
    import toolssm.train as train_mod

    def started(*a, **k):
        raise AssertionError("work started before the input was refused")

    for mod, name in ((cli, "evaluate"), (train_mod, "make_batch")):
        monkeypatch.setattr(mod, name, started)


def tree(d: Path) -> dict:
    """Every file under ``d``: its bytes' hash and its modification time (a rewrite with the same bytes shows)."""
    return {str(p.relative_to(d)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(d.rglob("*")) if p.is_file()}  # fmt: skip


def one_line_error(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code == 2, captured
    assert len(err) == 1 and err[0].startswith("toolssm: error: "), err
    assert "evaluating" not in captured.out  # refused before the evaluation, not after it
    return err[0]


# -- unwritable output folders ---------------------------------------------------------------------------


def _writable(d: Path) -> bool:
    try:
        (d / "probe").write_text("x")
    except OSError:
        return False
    (d / "probe").unlink()
    return True


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder this process cannot write, holding one file. chmod stops an ordinary user; root ignores the
    mode, so as root the folder is made immutable (chattr +i) or a read-only bind mount; skipped if neither."""
    d = tmp_path / "ro"
    d.mkdir()
    (d / "keep.txt").write_text("mine")
    undo = None
    if os.geteuid() != 0:
        d.chmod(0o555)
        undo = lambda: d.chmod(0o755)  # noqa: E731
    elif subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode == 0:
        undo = lambda: subprocess.run(["chattr", "-i", str(d)], check=True)  # noqa: E731
    elif subprocess.run(["mount", "--bind", str(d), str(d)], capture_output=True).returncode == 0:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(d)], capture_output=True)
        undo = lambda: subprocess.run(["umount", str(d)], check=True)  # noqa: E731
    if undo is None or _writable(d):
        if undo:
            undo()
        pytest.skip("no way to make a read-only folder here (as root: chattr +i or a read-only bind mount)")
    yield d
    undo()


COMMANDS = {
    "train": lambda out, ck: ["train", *TINY, "--out", out],
    "demo": lambda out, ck: ["demo", *TINY, "--lengths", "2", "--n-problems", "1", "--out", out],
    "eval": lambda out, ck: ["eval", "--checkpoint", ck, "--lengths", "2", "--n-problems", "1", "--no-progress",
                             "--out", out],
    "compare": lambda out, ck: ["compare", "--models", "lstm", "--steps", "1", "--lengths", "2", "--out", out],
    "reproduce": lambda out, ck: ["reproduce", "fig2-addition", "--dry-run", "--out", out],
    "theory": lambda out, ck: ["theory", "--parts", "turing", "--out", out],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("where", ["/proc/x", "/sys/x", "/proc/self/x"])
def test_an_out_inside_a_kernel_file_system_is_refused_before_any_work(capsys, ckpt, no_work, command, where):
    msg = one_line_error(capsys, COMMANDS[command](where, str(ckpt)))
    assert f"bad --out {where}" in msg and "kernel file system" in msg


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("sub", ["", "new"])
def test_an_out_in_a_read_only_folder_is_refused_and_left_alone(capsys, ckpt, no_work, readonly_dir, command, sub):
    out = readonly_dir / sub if sub else readonly_dir
    before = tree(readonly_dir)
    msg = one_line_error(capsys, COMMANDS[command](str(out), str(ckpt)))
    assert f"bad --out {out}" in msg and "not writable" in msg
    assert tree(readonly_dir) == before


def test_eval_refuses_an_unwritable_default_out_before_evaluating(capsys, ckpt, tmp_path, no_work):
    run = tmp_path / "run"
    shutil.copytree(ckpt / "checkpoint", run / "checkpoint")
    (run / "eval").write_text("a file where the default <run>/eval would go")
    msg = one_line_error(capsys, ["eval", "--checkpoint", str(run), "--lengths", "2", "--no-progress"])
    assert "is a file, not a folder" in msg


# -- checkpoints that do not fit, or are not what they claim ------------------------------------------


def _doctored(ckpt, tmp_path, edit=None, raw: bytes | None = None) -> Path:
    bad = tmp_path / "bad"
    shutil.copytree(ckpt / "checkpoint", bad)
    if raw is not None:
        (bad / "config.json").write_bytes(raw)
    elif edit is not None:
        cfg = json.loads((bad / "config.json").read_text())
        edit(cfg)
        (bad / "config.json").write_text(json.dumps(cfg))
    return bad


def _use(bad, problem="12*3"):
    return [["solve", "--checkpoint", str(bad), problem],
            ["eval", "--checkpoint", str(bad), "--lengths", "2", "--n-problems", "1", "--no-progress"]]  # fmt: skip


@pytest.mark.parametrize("task, problem", [("multiplication-x2", "12*3"), ("subtraction", "5-3"),
                                           ("tm-add", "101+11")])  # fmt: skip
def test_a_config_naming_another_task_than_its_vocabulary_is_refused(capsys, ckpt, tmp_path, no_work, task, problem):
    bad = _doctored(ckpt, tmp_path, lambda c: c.update(task=task))
    before = tree(bad)
    for argv in _use(bad, problem):
        msg = one_line_error(capsys, argv)
        assert f"does not fit task {task}: its vocabulary lacks" in msg, argv
    assert tree(bad) == before


def test_a_binary_config_json_is_named(capsys, ckpt, tmp_path, no_work):
    bad = _doctored(ckpt, tmp_path, raw=b"\xff\xfe\x00\x01binary")
    before = tree(bad)
    for argv in _use(bad, "1+2"):
        msg = one_line_error(capsys, argv)
        assert str(bad / "config.json") in msg and "not UTF-8" in msg
    assert tree(bad) == before


@pytest.mark.parametrize("version", [99, 0, "1", None])
def test_a_config_of_another_format_is_refused(capsys, ckpt, tmp_path, no_work, version):
    bad = _doctored(ckpt, tmp_path, lambda c: c.update(format=version))
    for argv in _use(bad, "1+2"):
        assert f"has format {version!r}; this toolssm reads format 1" in one_line_error(capsys, argv)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_checkpoint_with_non_finite_weights_is_refused(capsys, ckpt, tmp_path, no_work, value):
    from safetensors.torch import load_file, save_file

    bad = _doctored(ckpt, tmp_path)
    weights = load_file(bad / "model.safetensors")
    save_file({k: torch.full_like(v, value) for k, v in weights.items()}, bad / "model.safetensors")
    before = tree(bad)
    for argv in _use(bad, "1+2"):
        msg = one_line_error(capsys, argv)
        assert "NaN or infinite weights" in msg and "diverged" in msg
        assert "answer:" not in capsys.readouterr().out
    assert tree(bad) == before


# -- sweep records --------------------------------------------------------------------------------------


def _record(**change):
    rec = {"run_id": "a", "experiment": "fig2-addition", "panel": "", "row": "lstm", "task": "addition",
           "train_size": 5, "seed": 0, "config": {}, "lengths": ["5"], "n_problems": 2, "skipped": [], "wall_s": 1.0,
           "results": [{"spec": "5", "size": 5, "n": 2, "answer_acc": 1.0, "trajectory_acc": 1.0, "token_acc": None,
                        "truncated": 0, "tokens_per_problem": 1.0, "seconds": 0.1}]}  # fmt: skip
    rec.update(change)
    return json.dumps(rec).encode()


@pytest.mark.parametrize(
    "raw, needle",
    [
        (_record(results="oops"), "malformed results"),
        (_record(results=["oops"]), "results[0] is not a size's result"),
        (_record(results=[{"spec": "5"}]), "results[0] is not a size's result"),
        (_record(results=[{**json.loads(_record())["results"][0], "answer_acc": "high"}]), "results[0] is not"),
        (_record(train_size="5"), "malformed train_size"),
        (_record(config=None), "malformed config"),
        (b"\xff\xfe{\"run_id\": 1}", "not UTF-8"),
    ],
)
def test_report_names_a_malformed_record_in_one_line(capsys, tmp_path, raw, needle):
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "a.jsonl").write_bytes(raw)
    before = tree(tmp_path)
    msg = one_line_error(capsys, ["report", str(tmp_path)])
    assert needle in msg and str(tmp_path / "records" / "a.jsonl") in msg
    assert tree(tmp_path) == before  # no report.md, nothing rewritten


def test_report_names_a_non_utf8_results_file_and_a_bad_plan(capsys, tmp_path):
    (tmp_path / "results.jsonl").write_bytes(_record() + b"\n\xff\n")
    msg = one_line_error(capsys, ["report", str(tmp_path)])
    assert f"bad record file {tmp_path / 'results.jsonl'}: not UTF-8" in msg
    (tmp_path / "results.jsonl").write_bytes(_record() + b"\n")
    (tmp_path / "sweep.json").write_bytes(b"\xff{")
    assert f"bad {tmp_path / 'sweep.json'}: not a sweep's plan" in one_line_error(capsys, ["report", str(tmp_path)])


# -- sizes, batches and step counts that cannot finish ----------------------------------------------------


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["eval", "--lengths", "1000000000"], "evaluating addition at size 1000000000"),
        (["eval", "--lengths", "5", "100000000+5"], "at size 100000000+5"),
        (["eval", "--lengths", "<=1000000000"], "at size <=1000000000"),
        (["eval", "--lengths", "100000", "--n-problems", "1000", "--batch-size", "1000"], "1,000 at once"),
        (["eval", "--lengths", "100000", "--n-problems", "1000", "--batch-size", "100", "--procs", "10"],
         "1,000 at once"),
        (["eval", "--lengths", "5", "--n-problems", "1000000000"], "1,000,000,000 problems, 32 at once"),
    ],
)
def test_an_evaluation_that_cannot_fit_is_refused_before_any_work(capsys, ckpt, tmp_path, no_work, argv, needle):
    before = tree(ckpt)
    msg = one_line_error(capsys, [argv[0], "--checkpoint", str(ckpt), *argv[1:], "--out", str(tmp_path / "ev")])
    assert needle in msg and "of memory, 8.0 GiB is available" in msg
    assert tree(ckpt) == before and not (tmp_path / "ev").exists()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "--batch-size", "1000000000"], "a training batch of 1,000,000,000 addition trajectories"),
        (["train", "--task", "hanoi", "--train-size", "60"], "hanoi trajectories"),
        (["demo", "--batch-size", "1000000000"], "a training batch of 1,000,000,000"),
        (["demo", "--lengths", "1000000000"], "evaluating addition at size 1000000000"),
        (["train", "--steps", str(10**30)], f"bad steps={10**30}: at most 2**53"),
        (["train", "--save-every", str(2**53 + 1)], "bad save_every"),
        (["train", "--log-every", str(2**60)], "bad log_every"),
        (["train", "--warmup", str(10**20)], "bad warmup"),
    ],
)
def test_training_that_cannot_finish_is_refused_before_any_work(capsys, tmp_path, no_work, argv, needle):
    out = tmp_path / "run"
    assert needle in one_line_error(capsys, [*argv, "--out", str(out)])
    assert not out.exists()


def test_the_memory_floor_lets_large_real_evaluations_run():
    """10,000-digit addition at the default 20 problems and a 1,000,000-digit problem alone fit in 8 GiB."""
    add = get_task("addition")
    limits.check_eval_memory(add, ["10000"], n_problems=20, batch_size=32)
    limits.check_eval_memory(add, ["1000000"], n_problems=1, batch_size=1)
    limits.check_eval_memory(get_task("hanoi"), ["12"], n_problems=20, batch_size=32)
    limits.check_train_memory(add, train_size=20, batch_size=256, vocab_size=40, model_kwargs={"d_model": 1024,
                                                                                                "n_layers": 8})


@pytest.mark.parametrize("task, size", [("addition", 3000), ("multiplication-x2", 1500), ("hanoi", 9),
                                        ("tm-add", 3000), ("logic-graph", 20)])  # fmt: skip
def test_the_token_estimate_is_a_floor_of_the_expert_trajectory(task, size):
    """Past the probes (at sizes whose problems reach PROBE_TOKENS) the estimate extrapolates; it must stay below
    the expert's real length (a floor: refusals are never wrong) and within 8x of it (still a useful bound)."""
    import random
    import statistics

    t = get_task(task)
    real = statistics.median(len(t.demonstrate(t.sample_eval(random.Random(s), str(size)))) for s in range(3))
    est = limits.expert_tokens(t, size)
    assert real / 8 <= est <= real, (est, real)


def test_available_memory_is_read_on_linux():
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc/meminfo")
    have = REAL_AVAILABLE_MEMORY()
    assert have is not None and 0 < have <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


# -- the run folder ----------------------------------------------------------------------------------------


def _cli(*argv, **kw):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "toolssm.cli", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)  # fmt: skip


def test_a_second_training_into_a_busy_run_folder_is_refused_naming_the_holder(tmp_path):
    """Two real processes: the first trains (long enough to still hold the folder), the second is refused in one
    line with the first's pid and changes nothing; once the first is killed, the folder is free again."""
    out = tmp_path / "run"
    long_run = ["train", *TINY, "--steps", "1000000", "--save-every", "2", "--log-every", "1", "--out", str(out)]
    first = _cli(*long_run, start_new_session=True)
    try:
        deadline = time.monotonic() + 120  # a wait for the first to start, not a timing assertion
        while not ((out / "log.jsonl").is_file() and (out / "log.jsonl").read_text().count("\n") >= 2):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first training did not start"
            time.sleep(0.2)
        assert (out / "train.lock").read_text().strip() == str(first.pid)
        os.kill(first.pid, signal.SIGSTOP)  # hold it still, so the folder can be compared before and after
        before = tree(out)
        second = _cli("train", *TINY, "--seed", "7", "--resume", "--steps", "1000000", "--out", str(out))
        _, err = second.communicate(timeout=300)
        assert second.returncode == 2
        (line,) = err.strip().splitlines()
        assert line == (f"toolssm: error: {out} is in use: pid {first.pid} is training into it (lock "
                        f"{out / 'train.lock'}); wait for it to finish, or choose another --out")  # fmt: skip
        assert tree(out) == before
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.communicate()
    # the SIGKILLed holder's lock is gone with it: the run resumes from its checkpoint
    third = _cli("train", *TINY, "--steps", "1000000", "--save-every", "2", "--log-every", "1", "--resume",
                 "--out", str(out), "--time-limit", "1e-9")  # fmt: skip
    _, err = third.communicate(timeout=300)
    assert third.returncode == 124, err
    assert not (out / "train.lock").exists()


def test_a_lock_is_released_by_the_context_and_refuses_while_held(tmp_path):
    from toolssm.paths import RunLock

    with RunLock(tmp_path / "r") as held:
        with pytest.raises(ValueError, match=f"pid {os.getpid()} is training into it"):
            RunLock(tmp_path / "r").acquire()
        assert held.path.read_text().strip() == str(os.getpid())
    assert not (tmp_path / "r").exists()  # created for nothing: removed with its lock
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "keep").write_text("x")
    with RunLock(tmp_path / "s"):
        pass
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["keep"]
    RunLock(tmp_path / "s").acquire().release()  # and it can be taken again


def test_on_cuda_the_models_part_of_a_batch_is_compared_with_the_gpus_free_memory(monkeypatch):
    """No GPU needed: the GPU's free memory is stubbed. 4,096 addition trajectories (384 tokens each as a floor) with
    a 40-token vocabulary and d_model 1024 x 8 layers need about 48.5 GiB of logits and layer outputs, 0.05 GiB of
    host memory."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (32 * 2**30, 80 * 2**30))
    args = dict(train_size=20, batch_size=4096, vocab_size=40, model_kwargs={"d_model": 1024, "n_layers": 8})
    add, cuda = get_task("addition"), torch.device("cuda")
    with pytest.raises(ValueError, match="needs at least 48.5 GiB of GPU memory, 32.0 GiB is free"):
        limits.check_train_memory(add, **args, device=cuda)
    limits.check_train_memory(add, **args, device=cuda, world=2)  # each of 2 ranks takes half the batch
    with pytest.raises(ValueError, match="of memory, 8.0 GiB is available"):  # on the CPU it all counts as host
        limits.check_train_memory(add, **args, device=torch.device("cpu"), world=2)
