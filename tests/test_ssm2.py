"""Mamba-2, Gated DeltaNet, Hybrid: the chunked parallel forms against plain sequential recurrences, gradients,
the carried state, and the hybrid's layer layout."""

import pytest
import torch

from toolssm.models import ModelConfig, build_model, resolve
from toolssm.models.gated_deltanet import chunk_gated_delta_rule, gated_delta_step
from toolssm.models.hybrid import AttentionLayer, attention_layers
from toolssm.models.mamba import ResidualBlock
from toolssm.models.mamba2 import ssd_chunked, ssd_step

NEW = ["mamba2", "gated_deltanet", "hybrid"]


# ----------------------------------------------------------------------------------------------------------
# SSD (Mamba-2)


def reference_ssd(x, dt, A, B, C, h0=None):
    """h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T; y_t = h_t C_t, one step at a time, written out per index."""
    Bsz, T, H, P = x.shape
    h = torch.zeros(Bsz, H, P, B.shape[-1], dtype=x.dtype) if h0 is None else h0.clone()
    ys = []
    for t in range(T):
        decay = torch.exp(dt[:, t] * A)  # (B, H)
        h = decay[:, :, None, None] * h + torch.einsum("bh,bhp,bn->bhpn", dt[:, t], x[:, t], B[:, t])
        ys.append(torch.einsum("bhpn,bn->bhp", h, C[:, t]))
    return torch.stack(ys, 1), h


def random_ssd(Bsz, T, H=3, P=4, N=5, dtype=torch.float32):
    x = torch.randn(Bsz, T, H, P, dtype=dtype)
    dt = torch.nn.functional.softplus(torch.randn(Bsz, T, H, dtype=dtype))  # up to a few: strong decays too
    A = -torch.exp(torch.randn(H, dtype=dtype))
    B, C = torch.randn(Bsz, T, N, dtype=dtype), torch.randn(Bsz, T, N, dtype=dtype)
    return x, dt, A, B, C


@pytest.mark.parametrize("T", [1, 2, 7, 16, 37, 64, 100])
@pytest.mark.parametrize("chunk", [1, 4, 16, 64])
@pytest.mark.parametrize("with_h0", [False, True])
def test_chunked_ssd_equals_sequential(T, chunk, with_h0):
    x, dt, A, B, C = random_ssd(2, T)
    h0 = torch.randn(2, 3, 4, 5) if with_h0 else None
    y, h = ssd_chunked(x, dt, A, B, C, h0, chunk=chunk)
    y_ref, h_ref = reference_ssd(x, dt, A, B, C, h0)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=1e-5)


def test_ssd_step_equals_sequential():
    x, dt, A, B, C = random_ssd(2, 9)
    h, ys = None, []
    for t in range(9):
        y, h = ssd_step(x[:, t], dt[:, t], A, B[:, t], C[:, t], h)
        ys.append(y)
    y_ref, h_ref = reference_ssd(x, dt, A, B, C)
    torch.testing.assert_close(torch.stack(ys, 1), y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=1e-5)


def test_chunked_ssd_gradients_match_sequential():
    inputs = [t.requires_grad_() for t in random_ssd(2, 45, dtype=torch.float64)]
    h0 = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    grads = []
    for fn in (lambda *a: ssd_chunked(*a, chunk=16), reference_ssd):
        y, h = fn(*inputs, h0)
        ((y * y.detach().sin()).sum() + h.sum()).backward()
        grads.append([t.grad.clone() for t in [*inputs, h0]])
        for t in [*inputs, h0]:
            t.grad = None
    for g, r in zip(*grads, strict=True):
        torch.testing.assert_close(g, r, atol=1e-9, rtol=1e-7)


# ----------------------------------------------------------------------------------------------------------
# the gated delta rule (Gated DeltaNet)


def reference_gated_delta(q, k, v, g, beta, h0=None):
    """S_t = exp(g_t) S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T; o_t = S_t q_t, in the paper's (V, K)
    orientation, one step at a time. Returns the state as S^T (K, V), the layout the model keeps."""
    Bsz, T, H, K = k.shape
    S = torch.zeros(Bsz, H, v.shape[-1], K, dtype=q.dtype) if h0 is None else h0.transpose(-1, -2).clone()
    eye = torch.eye(K, dtype=q.dtype)
    os = []
    for t in range(T):
        kt, vt, bt = k[:, t], v[:, t], beta[:, t, :, None, None]  # (B, H, K), (B, H, V), (B, H, 1, 1)
        outer_kk = kt[..., :, None] * kt[..., None, :]  # (B, H, K, K)
        S = torch.exp(g[:, t])[..., None, None] * S @ (eye - bt * outer_kk) + bt * vt[..., :, None] * kt[..., None, :]
        os.append((S @ q[:, t, ..., None])[..., 0])  # (B, H, V)
    return torch.stack(os, 1), S.transpose(-1, -2)


def random_gdn(Bsz, T, H=3, K=4, V=6, dtype=torch.float32):
    q = torch.nn.functional.normalize(torch.randn(Bsz, T, H, K, dtype=dtype), dim=-1) * K**-0.5
    k = torch.nn.functional.normalize(torch.randn(Bsz, T, H, K, dtype=dtype), dim=-1)
    v = torch.randn(Bsz, T, H, V, dtype=dtype)
    g = -torch.exp(torch.randn(Bsz, T, H, dtype=dtype))  # log-decays, some strong
    beta = torch.rand(Bsz, T, H, dtype=dtype)
    return q, k, v, g, beta


@pytest.mark.parametrize("T", [1, 2, 7, 16, 37, 64, 100])
@pytest.mark.parametrize("chunk", [1, 4, 16, 64])
@pytest.mark.parametrize("with_h0", [False, True])
def test_chunked_gated_delta_equals_sequential(T, chunk, with_h0):
    q, k, v, g, beta = random_gdn(2, T)
    h0 = torch.randn(2, 3, 4, 6) if with_h0 else None
    o, h = chunk_gated_delta_rule(q, k, v, g, beta, h0, chunk=chunk)
    o_ref, h_ref = reference_gated_delta(q, k, v, g, beta, h0)
    torch.testing.assert_close(o, o_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=1e-5)


def test_gated_delta_no_decay_beta_one_is_exact_delta_rule():
    """g = 0, beta = 1: the plain delta rule, which overwrites: after writing v under key k, S k == v."""
    q, k, v, g, beta = random_gdn(1, 30)
    o, h = chunk_gated_delta_rule(q, k, v, torch.zeros_like(g), torch.ones_like(beta), chunk=8)
    o_ref, h_ref = reference_gated_delta(q, k, v, torch.zeros_like(g), torch.ones_like(beta))
    torch.testing.assert_close(o, o_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close((h.transpose(-1, -2) @ k[0, -1, :, :, None])[..., 0], v[:, -1], atol=1e-5, rtol=0)


def test_gated_delta_step_equals_sequential():
    q, k, v, g, beta = random_gdn(2, 9)
    h, os = None, []
    for t in range(9):
        o, h = gated_delta_step(q[:, t], k[:, t], v[:, t], g[:, t], beta[:, t], h)
        os.append(o)
    o_ref, h_ref = reference_gated_delta(q, k, v, g, beta)
    torch.testing.assert_close(torch.stack(os, 1), o_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=1e-5)


def test_chunked_gated_delta_gradients_match_sequential():
    inputs = [t.requires_grad_() for t in random_gdn(2, 45, dtype=torch.float64)]
    h0 = torch.randn(2, 3, 4, 6, dtype=torch.float64, requires_grad=True)
    grads = []
    for fn in (lambda *a: chunk_gated_delta_rule(*a, chunk=16), reference_gated_delta):
        o, h = fn(*inputs, h0)
        ((o * o.detach().sin()).sum() + h.sum()).backward()
        grads.append([t.grad.clone() for t in [*inputs, h0]])
        for t in [*inputs, h0]:
            t.grad = None
    for g, r in zip(*grads, strict=True):
        torch.testing.assert_close(g, r, atol=1e-9, rtol=1e-7)


# ----------------------------------------------------------------------------------------------------------
# the models


def cpu_model(arch, vocab=23, **kw):
    return build_model(arch, vocab, {**resolve(ModelConfig(arch=arch)), **kw})


@pytest.mark.parametrize("arch", NEW)
def test_gradients_reach_every_parameter(arch):
    model = cpu_model(arch)
    x = torch.randint(0, 23, (2, 80))  # longer than one chunk
    logits, _ = model(x[:, :-1])
    torch.nn.functional.cross_entropy(logits.reshape(-1, 23), x[:, 1:].reshape(-1)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("arch", NEW)
def test_forward_state_equals_stepped_state(arch):
    model = cpu_model(arch, chunk=16) if arch != "hybrid" else cpu_model(arch)
    model.eval()
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


def test_mamba2_optional_mlp_and_head_dim():
    model = cpu_model("mamba2", d_ff=96, head_dim=32)
    assert model.layers[0].mixer.n_heads == 4 and model.layers[0].mlp is not None
    assert cpu_model("mamba2").layers[0].mlp is None  # off by default, as in Mamba-2
    with pytest.raises(ValueError, match="head_dim"):
        cpu_model("mamba2", head_dim=48)


def test_presets_and_settings():
    for arch in NEW:
        for preset in ("cpu", "paper"):
            resolve(ModelConfig(arch=arch, preset=preset))
    assert resolve(ModelConfig(arch="mamba2", chunk=16))["chunk"] == 16
    assert resolve(ModelConfig(arch="gated_deltanet", head_dim=32))["head_dim"] == 32
    assert resolve(ModelConfig(arch="hybrid", attn_every=2))["attn_every"] == 2
    with pytest.raises(ValueError, match="no setting attn_every"):
        resolve(ModelConfig(arch="mamba2", attn_every=2))
    with pytest.raises(ValueError, match="no setting head_dim"):
        resolve(ModelConfig(arch="mamba", head_dim=16))


def test_state_sizes_of_the_cpu_presets_match():
    """mamba, mamba2 and gated_deltanet cpu presets keep the same number of recurrent state numbers per layer."""
    sizes = {}
    for arch in ("mamba", "mamba2", "gated_deltanet"):
        with torch.no_grad():
            _, (_, ssm) = cpu_model(arch)(torch.zeros(1, 3, dtype=torch.long))
        sizes[arch] = ssm[0, 0].numel()
    assert len(set(sizes.values())) == 1, sizes


# ----------------------------------------------------------------------------------------------------------
# the hybrid's layout


@pytest.mark.parametrize(
    "n_layers, attn_every, expected",
    [
        (4, 4, [3]),
        (24, 6, [5, 11, 17, 23]),
        (8, 2, [1, 3, 5, 7]),
        (2, 4, [1]),  # shorter than attn_every: still one attention layer, on top
        (5, 2, [0, 2, 4]),  # counted from the top
        (3, 1, [0, 1, 2]),
    ],
)
def test_hybrid_attention_layers_where_attn_every_says(n_layers, attn_every, expected):
    assert [i for i, a in enumerate(attention_layers(n_layers, attn_every)) if a] == expected
    model = cpu_model("hybrid", d_model=16, n_layers=n_layers, attn_every=attn_every)
    for i, layer in enumerate(model.layers):
        assert isinstance(layer, AttentionLayer if i in expected else ResidualBlock), i
    x = torch.randint(0, 23, (2, 11))
    with torch.no_grad():
        full, state = model(x)
        conv, ssm, k, v, pos = state
        assert conv.shape[1] == ssm.shape[1] == n_layers - len(expected)
        assert k.shape[1] == v.shape[1] == len(expected) and k.shape[3] == 11
        assert pos.tolist() == [11, 11]
        pre, s = model(x[:, :6])
        steps = []
        for t in range(6, 11):
            logits, s = model.step(x[:, t], s)
            steps.append(logits)
    torch.testing.assert_close(torch.cat([pre, torch.stack(steps, 1)], 1), full, atol=1e-5, rtol=0)
