"""Activation checkpointing (`set_grad_checkpoint`, `--grad-checkpoint`): the same logits and gradients, far fewer
activations kept for the backward, and a one-line error for the models whose layers run in one call."""

import json
import sys
from pathlib import Path

import pytest
import torch

from toolssm.models import ModelConfig, build_model, gradient_model_names, resolve, set_grad_checkpoint
from toolssm.train import TrainConfig, train

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
from grad_checkpoint import kept_bytes  # noqa: E402  (the benchmark's count of kept activation bytes)

V = 23


def tiny(arch):
    torch.manual_seed(0)
    kw = {**resolve(ModelConfig(arch=arch)), "d_model": 16, "n_layers": 4}
    return build_model(arch, V, kw)


def logits_and_grads(model, x):
    model.zero_grad()
    logits, _ = model(x)
    logits.square().mean().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


LAYERED = [a for a in gradient_model_names() if tiny(a).layered]


def test_every_model_but_the_rnns_is_layered():
    assert set(gradient_model_names()) - set(LAYERED) == {"lstm", "gru"}


@pytest.mark.parametrize("arch", LAYERED)
def test_checkpointing_changes_no_logit_or_gradient(arch):
    x = torch.randint(0, V, (2, 37))
    model = tiny(arch)
    ref_logits, ref_grads = logits_and_grads(model, x)
    got_logits, got_grads = logits_and_grads(set_grad_checkpoint(model, True), x)
    torch.testing.assert_close(got_logits, ref_logits, atol=1e-6, rtol=1e-6)
    assert got_grads.keys() == ref_grads.keys() and len(ref_grads) == len(list(model.parameters()))
    for name, g in got_grads.items():
        torch.testing.assert_close(g, ref_grads[name], atol=1e-6, rtol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("arch", LAYERED)
def test_checkpointing_keeps_a_fraction_of_the_activations(arch):
    x = torch.randint(0, V, (2, 64))
    model = tiny(arch)
    plain = kept_bytes(model, x)
    checkpointed = kept_bytes(set_grad_checkpoint(model, True), x)
    assert checkpointed < plain / 3, (checkpointed, plain)  # 4 layers: their inputs, not their insides
    with torch.no_grad():  # no gradient wanted: nothing is checkpointed, nothing is kept
        assert kept_bytes(model, x) == 0


@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_rnns_refuse_checkpointing_in_one_line(arch):
    with pytest.raises(ValueError, match="no layer stack to checkpoint") as e:
        set_grad_checkpoint(tiny(arch), True)
    assert "\n" not in str(e.value)
    assert set_grad_checkpoint(tiny(arch), False).grad_checkpoint is False


def test_training_with_checkpointing_logs_the_same_losses(tmp_path):
    def run(out, on):
        cfg = TrainConfig(model=ModelConfig(arch="mamba"), steps=3, batch_size=4, log_every=1, warmup=1, seed=3,
                          out=str(tmp_path / out), progress=False, grad_checkpoint=on)  # fmt: skip
        train(cfg)
        return [json.loads(line)["loss"] for line in (tmp_path / out / "log.jsonl").read_text().splitlines()]

    plain, checkpointed = run("plain", False), run("ckpt", True)
    assert len(plain) == 3
    assert checkpointed == pytest.approx(plain, rel=1e-5, abs=1e-6)


def test_training_an_rnn_with_checkpointing_is_a_one_line_error(tmp_path):
    cfg = TrainConfig(model=ModelConfig(arch="lstm"), steps=1, out=str(tmp_path / "r"), progress=False,
                      grad_checkpoint=True)  # fmt: skip
    with pytest.raises(ValueError, match="LSTM has no layer stack to checkpoint"):
        train(cfg)
