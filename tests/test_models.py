"""Every model: parallel forward == prefill + step == token-by-token step (fp32, atol 1e-5)."""

import pytest
import torch

from toolssm.models import ModelConfig, build_model, model_names, resolve, select_state

ATOL = 1e-5  # fp32; documented in docs/design.md


def tiny(arch, **settings):
    return build_model(arch, 23, {**resolve(ModelConfig(arch=arch, **settings)), "d_model": 16, "n_layers": 2})


#: settings that change a model's forward beyond its presets, each tested as its own model
VARIANTS = [("lstm", {"tie_embeddings": True}), ("gru", {"tie_embeddings": True}),
            ("mamba", {"tie_embeddings": False})]  # fmt: skip


@pytest.mark.parametrize("arch, settings", [(a, {}) for a in model_names()] + VARIANTS)
def test_parallel_forward_equals_recurrent_step(arch, settings):
    model = tiny(arch, **settings).eval()
    x = torch.randint(0, 23, (3, 29))
    with torch.no_grad():
        full, _ = model(x)
        state, steps = None, []
        for t in range(x.shape[1]):
            logits, state = model.step(x[:, t], state)
            steps.append(logits)
        stepped = torch.stack(steps, 1)
        pre, st = model(x[:, :17])
        rest = []
        for t in range(17, 29):
            logits, st = model.step(x[:, t], st)
            rest.append(logits)
        prefilled = torch.cat([pre, torch.stack(rest, 1)], 1)
    assert full.shape == (3, 29, 23)
    torch.testing.assert_close(stepped, full, atol=ATOL, rtol=0)
    torch.testing.assert_close(prefilled, full, atol=ATOL, rtol=0)


@pytest.mark.parametrize("arch", model_names())
def test_state_is_batch_first_fixed_size_and_selectable(arch):
    model = tiny(arch).eval()
    x = torch.randint(0, 23, (4, 9))
    with torch.no_grad():
        _, s_short = model(x[:, :2])
        _, s_long = model(x)
        if model.fixed_state:
            assert [t.shape for t in s_short] == [t.shape for t in s_long]  # O(1) state
        else:  # a full-attention KV cache grows with the context
            assert sum(t.numel() for t in s_long) > sum(t.numel() for t in s_short)
        assert all(t.shape[0] == 4 for t in s_long)
        sub = select_state(s_long, torch.tensor([2, 0]))
        a, _ = model.step(x[[2, 0], 0], sub)
        b, _ = model.step(x[:, 0], s_long)
    torch.testing.assert_close(a, b[[2, 0]], atol=ATOL, rtol=0)


def test_presets_and_overrides():
    assert resolve(ModelConfig(arch="lstm", preset="paper")) == {"d_model": 1536, "n_layers": 4}
    assert resolve(ModelConfig(arch="gru", d_model=32))["d_model"] == 32
    for bad in [ModelConfig(arch="nope"), ModelConfig(preset="huge"), ModelConfig(n_layers=0)]:
        with pytest.raises(ValueError):
            resolve(bad)


@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_a_tied_rnn_head_is_the_embedding(arch):
    """--model.tie-embeddings: the logits are the state against the embedding rows, with no separate head."""
    assert resolve(ModelConfig(arch=arch, tie_embeddings=True)) == {"d_model": 96, "n_layers": 2, "tie_embeddings": True}
    assert "tie_embeddings" not in resolve(ModelConfig(arch=arch))  # unset: the run's settings stay as before
    tied, untied = tiny(arch, tie_embeddings=True), tiny(arch)
    assert tied.head is None and sum(p.numel() for p in untied.parameters()) - sum(
        p.numel() for p in tied.parameters()) == 23 * 16 + 23  # the head's matrix and bias
    x = torch.randint(0, 23, (2, 5))
    with torch.no_grad():
        before, _ = tied(x)
        tied.embed.weight[7] += 1.0  # token 7's output row moves with its input row
        after, _ = tied(x)
    assert not torch.equal(before[..., 7], after[..., 7])


def test_a_setting_the_model_does_not_take_is_a_one_line_error():
    with pytest.raises(ValueError, match="model mistral has no setting tie_embeddings"):
        resolve(ModelConfig(arch="mistral", tie_embeddings=True))
