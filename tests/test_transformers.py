"""The Transformer baselines: sliding-window locality, the rolling KV cache, NoPE, window >= T == full attention."""

import pytest
import torch

from toolssm.models import ModelConfig, build_model, resolve
from toolssm.models.attention import extend_cache
from toolssm.models.mistral import Mistral
from toolssm.models.pythia import Pythia

ATOL = 1e-5
V = 23


def make(arch, **kw):
    return build_model(arch, V, {**resolve(ModelConfig(arch=arch)), **kw}).eval()


def stepped(model, x, state=None):
    out = []
    with torch.no_grad():
        for t in range(x.shape[1]):
            logits, state = model.step(x[:, t], state)
            out.append(logits)
    return torch.stack(out, 1), state


def perturbed_at(x, p):
    y = x.clone()
    y[:, p] = (y[:, p] + 1) % V
    return y


@pytest.mark.parametrize("n_layers", [1, 2])
def test_sliding_window_receptive_field(n_layers):
    """One layer sees tokens t-window+1 .. t; a stack of L layers sees back L*(window-1) tokens."""
    W, T, t = 6, 30, 25
    model = make("mistral", window=W, n_layers=n_layers)
    x = torch.randint(0, V, (2, T))
    reach = n_layers * (W - 1)  # the oldest visible token is t - reach
    with torch.no_grad():
        base, _ = model(x)
        far, _ = model(perturbed_at(x, t - reach - 1))
        near, _ = model(perturbed_at(x, t - reach))
    torch.testing.assert_close(far[:, t:], base[:, t:], atol=0, rtol=0)  # too old: no effect at all
    assert (near[:, t] - base[:, t]).abs().max() > 1e-4  # just inside the window: an effect


@pytest.mark.parametrize("model_fn", [lambda: make("pythia"), lambda: make("mistral", window=None)])
def test_full_attention_sees_the_oldest_token(model_fn):
    model = model_fn()
    x = torch.randint(0, V, (2, 40))
    with torch.no_grad():
        base, _ = model(x)
        pert, _ = model(perturbed_at(x, 0))
    assert (pert[:, -1] - base[:, -1]).abs().max() > 1e-4


@pytest.mark.parametrize("W,n_kv_heads", [(8, None), (16, None), (8, 2), (1, None), (2, 1)])
def test_rolling_cache_matches_parallel_forward(W, n_kv_heads):
    model = make("mistral", window=W, n_kv_heads=n_kv_heads)
    assert model.fixed_state
    x = torch.randint(0, V, (3, 3 * W + 5))
    with torch.no_grad():
        full, _ = model(x)
        _, s1 = model(x[:, :1])
    by_step, state = stepped(model, x)
    torch.testing.assert_close(by_step, full, atol=ATOL, rtol=0)
    assert [s.shape for s in state] == [s.shape for s in s1]  # fixed size
    k = state[0]
    assert k.shape[0] == 3 and k.shape[1] == 2 and k.shape[3] == W - 1  # (B, L, Hkv, window-1, Dh)
    assert torch.equal(state[-1], torch.full((3,), x.shape[1]))


@pytest.mark.parametrize("arch", ["pythia", "mistral"])
def test_prefill_in_chunks_is_exact(arch):
    """forward with an incoming cache continues exactly, whether the cache is partly padding or full."""
    model = make(arch, window=8) if arch == "mistral" else make(arch)
    x = torch.randint(0, V, (2, 50))
    with torch.no_grad():
        full, _ = model(x)
        outs, state = [], None
        for a, b in [(0, 3), (3, 5), (5, 20), (20, 21), (21, 50)]:
            logits, state = model(x[:, a:b], state)
            outs.append(logits)
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=ATOL, rtol=0)


@pytest.mark.parametrize("arch", ["pythia", "mistral"])
def test_nope(arch):
    """NoPE runs, decodes exactly, and has no positions: with one layer the last logits ignore the order of the
    earlier tokens (RoPE does not)."""
    kw = {"window": 64} if arch == "mistral" else {}
    model = make(arch, pos="nope", n_layers=1, **kw)
    x = torch.randint(0, V, (2, 20))
    perm = torch.cat([torch.randperm(19), torch.tensor([19])])
    with torch.no_grad():
        full, _ = model(x)
        shuffled, _ = model(x[:, perm])
    torch.testing.assert_close(stepped(model, x)[0], full, atol=ATOL, rtol=0)
    torch.testing.assert_close(shuffled[:, -1], full[:, -1], atol=ATOL, rtol=0)
    rope = make(arch, pos="rope", n_layers=1, **kw)
    with torch.no_grad():
        a, _ = rope(x)
        b, _ = rope(x[:, perm])
    assert (a[:, -1] - b[:, -1]).abs().max() > 1e-4


@pytest.mark.parametrize("W", [30, 64])
def test_window_at_least_T_equals_full_attention(W):
    T = 30
    windowed = make("mistral", window=W, n_kv_heads=2)
    full = make("mistral", window=None, n_kv_heads=2)
    full.load_state_dict(windowed.state_dict())
    assert windowed.fixed_state and not full.fixed_state
    x = torch.randint(0, V, (2, T))
    with torch.no_grad():
        a, _ = windowed(x)
        b, _ = full(x)
        pa, sa = windowed(x[:, :11])  # through the masked (cached) path as well
        pb, sb = full(x[:, :11])
    torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    torch.testing.assert_close(stepped(windowed, x[:, 11:], sa)[0], b[:, 11:], atol=ATOL, rtol=0)
    torch.testing.assert_close(stepped(full, x[:, 11:], sb)[0], b[:, 11:], atol=ATOL, rtol=0)


def test_presets_cli_fields_and_names():
    assert resolve(ModelConfig(arch="mistral", window=16))["window"] == 16  # the narrow-window control: one flag
    assert resolve(ModelConfig(arch="mistral", preset="paper"))["window"] == 512
    assert resolve(ModelConfig(arch="pythia", pos="nope"))["pos"] == "nope"
    for bad in [ModelConfig(arch="pythia", window=16), ModelConfig(arch="pythia", d_state=4)]:
        with pytest.raises(ValueError):
            resolve(bad)
    with pytest.raises(ValueError):
        make("pythia", pos="alibi")
    p, m = make("pythia"), make("mistral")
    assert isinstance(p, Pythia) and isinstance(m, Mistral)
    assert not p.fixed_state and m.fixed_state
    names = set(p.state_dict())
    for n in [
        "embed_in.weight",
        "layers.0.input_layernorm.weight",
        "layers.0.post_attention_layernorm.bias",
        "layers.0.attention.query_key_value.weight",
        "layers.0.attention.dense.bias",
        "layers.0.mlp.dense_h_to_4h.weight",
        "layers.0.mlp.dense_4h_to_h.bias",
        "final_layer_norm.weight",
        "embed_out.weight",
    ]:
        assert n in names, n
    assert p.rot == 4  # rotary_pct 0.25 of d_head 16


def test_extend_cache_appends_into_spare_room_and_leaves_the_old_state_alone():
    c0 = torch.randn(2, 3, 4, 5, 8)  # (B, L, H, C, Dh), contiguous: no spare room
    c1 = extend_cache(c0, 1)
    assert c1.shape == (2, 3, 4, 6, 8) and c1.data_ptr() != c0.data_ptr()  # moved into a buffer with room
    torch.testing.assert_close(c1[..., :5, :], c0, atol=0, rtol=0)
    c1[..., 5, :] = 1.0
    snapshot = c1.clone()
    c2 = extend_cache(c1, 2)
    assert c2.shape == (2, 3, 4, 8, 8) and c2.data_ptr() == c1.data_ptr()  # the same buffer, 2 more slots
    c2[..., 6:, :] = 2.0
    torch.testing.assert_close(c1, snapshot, atol=0, rtol=0)  # the old state's slots are untouched
    c = c2
    for _ in range(200):  # past the capacity: the contents move, and survive
        c = extend_cache(c, 1)
        c[..., -1, :] = float(c.shape[3])
    assert c.shape[3] == 208 and c.data_ptr() != c2.data_ptr()
    torch.testing.assert_close(c[..., :8, :], c2, atol=0, rtol=0)
    torch.testing.assert_close(c[0, 0, 0, 207], torch.full((8,), 208.0), atol=0, rtol=0)
    view = c0[:, :, :, :3]  # a slice of someone else's tensor looks like it has room: it must not be written
    assert extend_cache(view, 1).data_ptr() != c0.data_ptr()


@pytest.mark.parametrize("arch", ["pythia", "hybrid"])
def test_long_decoding_with_a_growing_cache_matches_the_parallel_forward(arch):
    model = build_model(arch, 23, {**resolve(ModelConfig(arch=arch)), "d_model": 16, "n_layers": 2}).eval()
    x = torch.randint(0, 23, (2, 150))  # past the first buffer (64 slots) and its doubling
    with torch.no_grad():
        full, _ = model(x)
        _, state = model(x[:, :10])
        steps = []
        for t in range(10, 150):
            logits, state = model.step(x[:, t], state)
            steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 10:], atol=1e-5, rtol=0)
