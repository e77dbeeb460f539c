"""Data-parallel training: 2 gloo processes on CPU give the single-process run on the same global batch."""

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from toolssm.models import ModelConfig
from toolssm.train import TimeLimitReached, TrainConfig, fit


def tiny_cfg(out, arch):
    return TrainConfig(
        model=ModelConfig(arch=arch, d_model=16, n_layers=1), steps=2, batch_size=4, warmup=1, log_every=1,
        out=str(out), progress=False, train_size=3, lr=1e-2, threads=1, device="cpu",  # gloo, even beside a GPU
    )  # fmt: skip


ARCHS = ("lstm", "pythia")  # a recurrent model and a Transformer, in one spawn (process start-up dominates)


def _worker(rank: int, world: int, port: int, tmp: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    try:
        for arch in ARCHS:
            _, model = fit(tiny_cfg(os.path.join(tmp, arch, "ddp"), arch))
            torch.save(model.state_dict(), os.path.join(tmp, arch, f"rank{rank}.pt"))
        # only rank 1 has a time limit: every rank must still stop after the same step, or the next collective hangs
        cfg = tiny_cfg(os.path.join(tmp, "stop", "ddp"), "lstm")
        cfg.steps, cfg.time_limit = 3, (1e-9 if rank == 1 else 0.0)
        try:
            fit(cfg)
            said = "finished"
        except TimeLimitReached as e:
            said = str(e)
        with open(os.path.join(tmp, "stop", f"rank{rank}.txt"), "w") as f:
            f.write(said)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(run) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "log.jsonl").open())}


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, _free_port(), str(tmp)), nprocs=2, join=True)
    return tmp


@pytest.mark.parametrize("arch", ARCHS)
def test_two_gloo_ranks_match_one_process_on_the_global_batch(ddp_runs, tmp_path, arch):
    run = ddp_runs / arch
    w0, w1 = (torch.load(run / f"rank{r}.pt") for r in (0, 1))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)  # the ranks stay in lock-step
    assert sorted(p.name for p in (run / "ddp").iterdir()) == ["checkpoint", "log.jsonl", "train_config.json"]

    _, single = fit(tiny_cfg(tmp_path / "single", arch))
    ddp, one = _losses(run / "ddp"), _losses(tmp_path / "single")
    assert sorted(ddp) == sorted(one) == [1, 2]
    for step in one:
        assert ddp[step] == pytest.approx(one[step], abs=1e-6)
    ref = single.state_dict()
    for k in ref:  # the updates equal the single-process updates, to float rounding
        torch.testing.assert_close(w0[k], ref[k], atol=1e-5, rtol=1e-4)


def test_one_ranks_time_limit_stops_every_rank_at_the_same_step_with_one_checkpoint(ddp_runs):
    said = [(ddp_runs / "stop" / f"rank{r}.txt").read_text() for r in (0, 1)]
    assert all("reached at step 1 of 3" in s for s in said), said
    assert json.loads((ddp_runs / "stop/ddp/checkpoint/config.json").read_text())["step"] == 1


def test_a_batch_that_does_not_split_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    monkeypatch.setattr(dist, "get_world_size", lambda: 3)
    with pytest.raises(ValueError, match="split evenly over 3 ranks"):
        fit(tiny_cfg(tmp_path, "lstm"))


def test_more_local_ranks_than_gpus_is_refused_in_one_line(monkeypatch):
    from toolssm import train as train_mod

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(train_mod, "resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"local rank 1 has no GPU of its own \(1 visible\).*--nproc-per-node 1"):
        train_mod.init_distributed("auto")
