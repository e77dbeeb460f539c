"""Mamba: the chunked parallel scan against a plain sequential recurrence, gradients, and the carried state."""

import pytest
import torch

from toolssm.models import ModelConfig, build_model, resolve
from toolssm.models.mamba import selective_scan


def reference_scan(x, dt, A, B, C, D, h0=None):
    """The selective SSM, one step at a time: h = exp(dt A) h + dt x B; y = h C + D x."""
    h = torch.zeros(x.shape[0], x.shape[2], A.shape[1], dtype=x.dtype) if h0 is None else h0
    ys = []
    for t in range(x.shape[1]):
        h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * x[:, t])[..., None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1) + D * x[:, t])
    return torch.stack(ys, 1), h


def random_ssm(Bsz, T, Di=6, N=5, dtype=torch.float32):
    x = torch.randn(Bsz, T, Di, dtype=dtype)
    dt = torch.nn.functional.softplus(torch.randn(Bsz, T, Di, dtype=dtype))  # up to a few: strong decays too
    A = -torch.exp(torch.randn(Di, N, dtype=dtype))
    B, C = torch.randn(Bsz, T, N, dtype=dtype), torch.randn(Bsz, T, N, dtype=dtype)
    D = torch.randn(Di, dtype=dtype)
    return x, dt, A, B, C, D


@pytest.mark.parametrize("T", [1, 2, 7, 16, 37, 64, 100])
@pytest.mark.parametrize("chunk", [1, 4, 16, 64])
@pytest.mark.parametrize("with_h0", [False, True])
def test_chunked_scan_equals_sequential(T, chunk, with_h0):
    x, dt, A, B, C, D = random_ssm(3, T)
    h0 = torch.randn(3, 6, 5) if with_h0 else None
    y, h = selective_scan(x, dt, A, B, C, D, h0, chunk=chunk)
    y_ref, h_ref = reference_scan(x, dt, A, B, C, D, h0)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("T", [1, 5, 13])
@pytest.mark.parametrize("with_h0", [False, True])
def test_scan_backward_is_exact(T, with_h0):
    """The hand-written backward (recompute + reverse scan per chunk) against finite differences, in float64."""
    inputs = [t.requires_grad_() for t in random_ssm(2, T, Di=3, N=2, dtype=torch.float64)]
    h0 = [torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True)] if with_h0 else []
    assert torch.autograd.gradcheck(lambda *args: selective_scan(*args, chunk=4), (*inputs, *h0))


def test_selective_scan_gradients_match_sequential():
    inputs = [t.requires_grad_() for t in random_ssm(2, 21)]
    h0 = torch.randn(2, 6, 5, requires_grad=True)
    y, h = selective_scan(*inputs, h0, chunk=8)
    ((y * y.detach().sin()).sum() + h.sum()).backward()
    grads = [t.grad.clone() for t in [*inputs, h0]]
    for t in [*inputs, h0]:
        t.grad = None
    y, h = reference_scan(*inputs, h0)
    ((y * y.detach().sin()).sum() + h.sum()).backward()
    for g, t in zip(grads, [*inputs, h0]):
        torch.testing.assert_close(g, t.grad, atol=1e-4, rtol=1e-4)


def cpu_mamba(vocab=23):
    return build_model("mamba", vocab, resolve(ModelConfig(arch="mamba")))


def test_gradients_reach_every_parameter():
    model = cpu_mamba()
    x = torch.randint(0, 23, (2, 40))
    logits, _ = model(x[:, :-1])
    torch.nn.functional.cross_entropy(logits.reshape(-1, 23), x[:, 1:].reshape(-1)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_forward_state_equals_stepped_state():
    model = cpu_mamba().eval()
    x = torch.randint(0, 23, (3, 45))
    with torch.no_grad():
        _, s_fwd = model(x)
        s_step = None
        for t in range(x.shape[1]):
            _, s_step = model.step(x[:, t], s_step)
        _, s_pre = model(x[:, :20])  # and prefill in two pieces
        _, s_pre = model(x[:, 20:], s_pre)
    for a, b, c in zip(s_fwd, s_step, s_pre, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        torch.testing.assert_close(a, c, atol=1e-5, rtol=0)


def test_checkpoint_round_trip(tmp_path):
    from toolssm.checkpoint import load_checkpoint, save_checkpoint
    from toolssm.tasks import get_task

    vocab = get_task("addition").vocab()
    kwargs = resolve(ModelConfig(arch="mamba"))
    for tie in (True, False):
        model = build_model("mamba", len(vocab), {**kwargs, "tie_embeddings": tie}).eval()
        save_checkpoint(tmp_path / str(tie), model, arch="mamba", model_kwargs={**kwargs, "tie_embeddings": tie},
                        vocab=vocab, task="addition", step=0)  # fmt: skip
        loaded = load_checkpoint(tmp_path / str(tie)).model
        x = torch.randint(0, len(vocab), (2, 11))
        with torch.no_grad():
            torch.testing.assert_close(loaded(x)[0], model(x)[0], atol=0, rtol=0)


def test_initialization():
    block = cpu_mamba().layers[0].mixer
    dt = torch.nn.functional.softplus(block.dt_proj.bias)
    assert dt.min() >= 1e-3 - 1e-7 and dt.max() <= 1e-1 + 1e-7
    assert torch.allclose(-torch.exp(block.A_log[0]), -torch.arange(1.0, 17.0))


def test_mamba_presets_and_settings():
    assert resolve(ModelConfig(arch="mamba", preset="paper")) == {
        "d_model": 768, "n_layers": 24, "d_state": 16, "d_conv": 4, "expand": 2,
    }  # fmt: skip
    assert resolve(ModelConfig(arch="mamba", d_state=8))["d_state"] == 8
    with pytest.raises(ValueError, match="no setting d_state"):
        resolve(ModelConfig(arch="lstm", d_state=8))
