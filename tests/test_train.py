import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from toolssm.batching import collate
from toolssm.models import ModelConfig, build_model, resolve
from toolssm.tasks import get_task
from toolssm.train import TrainConfig, lr_at, make_batch, masked_loss, train


def tiny_cfg(out, **kw):
    return TrainConfig(
        model=ModelConfig(d_model=16, n_layers=1), steps=6, batch_size=4, warmup=2, save_every=3, log_every=1,
        out=str(out), progress=False, train_size=3, **kw,
    )  # fmt: skip


def test_masked_loss_counts_only_trained_positions():
    task = get_task("addition")
    vocab = task.vocab()
    trajs = [task.demonstrate(task.parse(s)) for s in ["12+3", "999+1"]]
    tokens, mask = collate(trajs, vocab)
    assert mask[0, : len(trajs[0])].tolist() == trajs[0].loss_mask()
    assert not mask[0, len(trajs[0]) :].any()  # padding is never trained on
    model = build_model("lstm", len(vocab), resolve(ModelConfig(d_model=8, n_layers=1)))
    logits, _ = model(tokens[:, :-1])
    per_tok = F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], reduction="none")
    manual = per_tok[mask[:, 1:]].mean()
    torch.testing.assert_close(masked_loss(model, tokens, mask), manual)
    assert not torch.isclose(per_tok.mean(), manual)  # the mask really removes something


def test_batches_depend_only_on_seed_and_step():
    task, cfg = get_task("addition"), TrainConfig(batch_size=3)
    a, b = make_batch(task, task.vocab(), cfg, 7), make_batch(task, task.vocab(), cfg, 7)
    assert torch.equal(a[0], b[0])
    assert not torch.equal(a[0], make_batch(task, task.vocab(), cfg, 8)[0])


def test_lr_schedule_warms_up_then_decays_to_min():
    cfg = TrainConfig(steps=100, warmup=10, lr=1.0, min_lr=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(99, cfg) == pytest.approx(0.1, abs=1e-3)
    assert all(lr_at(s, cfg) >= lr_at(s + 1, cfg) for s in range(10, 99))


def test_resume_after_a_stop_gives_the_run_that_would_have_happened(tmp_path, stop_training_at):
    train(tiny_cfg(tmp_path / "a"))

    restore = stop_training_at(4)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_cfg(tmp_path / "b"))
    restore()
    assert json.loads((tmp_path / "b/checkpoint/config.json").read_text())["step"] == 3
    train(tiny_cfg(tmp_path / "b", resume=True))

    wa = load_file(tmp_path / "a/checkpoint/model.safetensors")
    wb = load_file(tmp_path / "b/checkpoint/model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    log = lambda d: {r["step"]: r["loss"] for r in map(json.loads, (tmp_path / d / "log.jsonl").open())}  # noqa: E731
    la, lb = log("a"), log("b")
    assert la[4] == lb[4] and la[5] == lb[5] and la[6] == lb[6]  # the next steps' losses match exactly


def test_training_reduces_the_loss(tmp_path):
    cfg = tiny_cfg(tmp_path, lr=1e-2)
    cfg.steps = 40
    train(cfg)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "log.jsonl").open()]
    assert losses[-1] < 0.6 * losses[0]


def _weights(run):
    return load_file(run / "checkpoint/model.safetensors")


def _step(run):
    return json.loads((run / "checkpoint/config.json").read_text())["step"]


def _signal_at(monkeypatch, k, *sigs):
    """Send this process ``sigs`` while training asks for step k's batch (as Ctrl-C or `kill` would there)."""
    import os
    import signal

    import toolssm.train as train_mod

    real = train_mod.make_batch

    def batch(task, vocab, cfg, step, *rest):
        if step == k:
            for sig in sigs:
                os.kill(os.getpid(), getattr(signal, sig))
        return real(task, vocab, cfg, step, *rest)

    monkeypatch.setattr(train_mod, "make_batch", batch)


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_stops_after_the_step_with_a_checkpoint_and_resume_is_exact(tmp_path, monkeypatch, sig):
    import signal

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)  # SIGINT: ignored in a background job
    train(tiny_cfg(tmp_path / "a"))
    _signal_at(monkeypatch, 1, sig)  # save_every=3: without the stop's own checkpoint, steps 1-2 would be lost
    with pytest.raises(KeyboardInterrupt, match="stopped at step 2 of 6; checkpoint saved in .*--resume"):
        train(tiny_cfg(tmp_path / "b"))
    assert _step(tmp_path / "b") == 2
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # the handlers are put back
    monkeypatch.undo()
    train(tiny_cfg(tmp_path / "b", resume=True))
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_second_ctrl_c_aborts_at_once(tmp_path, monkeypatch):
    _signal_at(monkeypatch, 1, "SIGINT", "SIGINT")
    with pytest.raises(KeyboardInterrupt) as e:
        train(tiny_cfg(tmp_path))
    assert "stopped at step" not in str(e.value)
    assert not (tmp_path / "checkpoint").exists()  # aborted inside step 2, before any checkpoint


def test_time_limit_stops_with_a_checkpoint_and_resumed_pieces_make_the_whole_run(tmp_path):
    from toolssm.train import TimeLimitReached

    train(tiny_cfg(tmp_path / "a"))
    steps = []
    for _ in range(10):
        try:
            train(tiny_cfg(tmp_path / "b", resume=True, time_limit=1e-9))  # stops after every step
            break
        except TimeLimitReached as e:
            assert "of 6; checkpoint saved in" in str(e)
            steps.append(_step(tmp_path / "b"))
    assert steps == [1, 2, 3, 4, 5]  # the sixth piece is the last step: done, no stop
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    log = lambda d: {r["step"]: r["loss"] for r in map(json.loads, (tmp_path / d / "log.jsonl").open())}  # noqa: E731
    assert log("a") == log("b")


def test_a_negative_time_limit_is_refused():
    with pytest.raises(ValueError, match="bad time_limit=-1"):
        TrainConfig(time_limit=-1).validate()


def test_a_step_that_outlasts_the_grace_after_a_signal_is_aborted(tmp_path, monkeypatch):
    import os
    import signal
    import time

    import toolssm.train as train_mod

    real = train_mod.make_batch

    def stuck(task, vocab, cfg, step, *rest):
        if step == 1:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)  # a step that will not end soon (an enormous batch, say)
        return real(task, vocab, cfg, step, *rest)

    monkeypatch.setattr(train_mod, "make_batch", stuck)
    monkeypatch.setattr(train_mod._Stop, "GRACE", 0.2)
    with pytest.raises(KeyboardInterrupt, match="did not end within 0.2 s of the signal"):
        train(tiny_cfg(tmp_path))
    assert not (tmp_path / "checkpoint").exists()
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_save_killed_at_any_point_leaves_a_whole_checkpoint(tmp_path, monkeypatch):
    """The swap is rmtree(prev), rename(final -> prev), rename(tmp -> final), rmtree(prev): a kill between any two
    of them must leave config.json and weights that load, also when an earlier kill left only checkpoint.prev."""
    import pathlib
    import shutil

    from toolssm.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint

    train(tiny_cfg(tmp_path / "run"))  # a whole checkpoint at step 6
    loaded = load_checkpoint(tmp_path / "run")
    args = dict(arch=loaded.arch, model_kwargs=loaded.config["model"], vocab=loaded.vocab, task=loaded.task)
    shutil.copytree(tmp_path / "run/checkpoint", tmp_path / "prev/checkpoint.prev")  # an earlier save killed mid-swap

    class Killed(Exception):
        pass

    for start, n_ops in ((s, n) for s in ("run", "prev") for n in range(6)):  # kill before the n-th rename/rmtree
        d = tmp_path / f"{start}{n_ops}"
        shutil.copytree(tmp_path / start, d)
        ops = {"n": 0}
        real_rename, real_rmtree = pathlib.Path.rename, shutil.rmtree

        def count(real):
            def op(*a, **k):
                if ops["n"] == n_ops:
                    raise Killed
                ops["n"] += 1
                return real(*a, **k)

            return op

        monkeypatch.setattr(pathlib.Path, "rename", count(real_rename))
        monkeypatch.setattr(shutil, "rmtree", count(real_rmtree))
        try:
            save_checkpoint(d, loaded.model, step=7, **args)
        except Killed:
            pass
        monkeypatch.undo()
        assert load_checkpoint(find_checkpoint(d)).model is not None, (start, n_ops)


def _tree(d):
    return {str(p.relative_to(d)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(d.rglob("*")) if p.is_file()}


def test_resuming_a_finished_run_leaves_its_folder_as_it_was(tmp_path):
    train(tiny_cfg(tmp_path))
    before = _tree(tmp_path)
    train(tiny_cfg(tmp_path, resume=True, time_limit=100.0))  # a runtime field differs: it may, and is not recorded
    assert _tree(tmp_path) == before  # train_config.json included: not rewritten


def test_a_resumed_run_logs_each_step_once(tmp_path, stop_training_at):
    restore = stop_training_at(5)  # steps 1-5 are logged, the checkpoint is at step 3
    with pytest.raises(KeyboardInterrupt):
        train(tiny_cfg(tmp_path))
    restore()
    log = tmp_path / "log.jsonl"
    assert [json.loads(line)["step"] for line in log.open()] == [1, 2, 3, 4, 5]
    with log.open("a") as f:
        f.write('{"step": 6, "lo')  # a line torn by a kill mid-write
    train(tiny_cfg(tmp_path, resume=True))
    recs = [json.loads(line) for line in log.open()]
    assert [r["step"] for r in recs] == [1, 2, 3, 4, 5, 6]  # steps 4 and 5 were trained again, and logged once
    whole = tmp_path / "whole"
    train(tiny_cfg(whole))
    assert [r["loss"] for r in recs] == [json.loads(line)["loss"] for line in (whole / "log.jsonl").open()]


def test_a_busy_run_folder_is_refused_and_left_alone(tmp_path):
    from toolssm.paths import RunLock

    train(tiny_cfg(tmp_path))
    before = _tree(tmp_path)
    with RunLock(tmp_path):  # as another training would hold it
        more = tiny_cfg(tmp_path, resume=True)
        more.steps = 9
        with pytest.raises(ValueError, match="is in use: pid"):
            train(more)
        assert {k: v for k, v in _tree(tmp_path).items() if k != "train.lock"} == before
    assert _tree(tmp_path) == before
