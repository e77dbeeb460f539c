"""The Recurrent Memory Transformer: segments, a fixed-size memory between them, forward == step across many."""

import pytest
import torch

from toolssm.models import ModelConfig, build_model, resolve, select_state

ATOL = 1e-5


def rmt(segment=3, n_mem=2, **kw):
    torch.manual_seed(0)
    return build_model("rmt", 11, {**resolve(ModelConfig(arch="rmt")), "d_model": 16, "n_layers": 2,
                                   "segment": segment, "n_mem": n_mem, **kw}).eval()  # fmt: skip


@pytest.mark.parametrize("segment, split", [(3, 5), (3, 6), (4, 1), (1, 7), (7, 7)])
def test_forward_equals_step_over_many_segments_and_any_prefill_point(segment, split):
    model = rmt(segment)
    x = torch.randint(0, 11, (2, 31))
    with torch.no_grad():
        full, s_full = model(x)
        state, steps = None, []
        for t in range(x.shape[1]):
            logits, state = model.step(x[:, t], state)
            steps.append(logits)
        pre, st = model(x[:, :split])
        rest, st = model(x[:, split:], st)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=ATOL, rtol=0)
    torch.testing.assert_close(torch.cat([pre, rest], 1), full, atol=ATOL, rtol=0)
    for a, b in zip(st, s_full):
        torch.testing.assert_close(a.float(), b.float(), atol=ATOL, rtol=0)


def test_state_is_the_same_size_after_any_number_of_segments_and_memory_moves_only_at_boundaries():
    model = rmt(segment=4, n_mem=2)
    x = torch.randint(0, 11, (3, 200))
    with torch.no_grad():
        shapes = {tuple(tuple(t.shape) for t in model(x[:, :n])[1]) for n in (1, 3, 4, 5, 17, 200)}
        init = model.initial_state(3)[0]
        mem3, _, _, fill3 = model(x[:, :3])[1]
        mem4, _, _, fill4 = model(x[:, :4])[1]
    assert len(shapes) == 1  # O(1): mem (B, n_mem, D), one segment's k/v buffer, fill
    assert shapes.pop() == ((3, 2, 16), (3, 2, 4, 2 + 4, 4), (3, 2, 4, 2 + 4, 4), (3,))
    torch.testing.assert_close(mem3, init)  # inside the first segment the memory is the initial one
    assert fill3.tolist() == [3] * 3 and fill4.tolist() == [0] * 3
    assert (mem4 - init).abs().max() > 1e-3  # the write pass at the end of the segment replaced it


def test_earlier_segments_reach_later_ones_only_through_the_memory():
    model = rmt(segment=4, n_mem=2)
    x = torch.randint(0, 11, (1, 12))
    y = x.clone()
    y[0, 1] = (x[0, 1] + 1) % 11  # change a token of the first segment
    with torch.no_grad():
        lx, _ = model(x)
        ly, _ = model(y)
        # with the memory it left, the third segment's logits are reproduced without the first two segments
        _, s8 = model(y[:, :8])
        tail, _ = model(y[:, 8:], s8)
    assert torch.equal(lx[0, :1], ly[0, :1])  # causal: the token before the change is untouched
    assert (lx[0, 8:] - ly[0, 8:]).abs().max() > 0  # the change reaches two segments later (small at init)
    torch.testing.assert_close(tail, ly[:, 8:], atol=ATOL, rtol=0)


def test_gradients_flow_back_through_the_memory():
    model = rmt(segment=4, n_mem=2).train()
    x = torch.randint(0, 11, (2, 12))
    emb = model.transformer.embed_tokens.weight
    logits, _ = model(x)
    logits[:, 8:].sum().backward()  # a loss on the third segment only
    rows = x[:, :4].unique()
    assert emb.grad[rows].abs().sum() > 0  # reaches the first segment's tokens
    assert model.memory.grad.abs().sum() > 0


def test_selected_rows_and_bad_settings():
    model = rmt()
    x = torch.randint(0, 11, (4, 5))
    with torch.no_grad():
        _, s = model(x)
        a, _ = model.step(x[[2, 0], 0], select_state(s, torch.tensor([2, 0])))
        b, _ = model.step(x[:, 0], s)
        mem, k, v, fill = s
        with pytest.raises(ValueError, match="same point of its segment"):
            model.step(x[:, 0], (mem, k, v, torch.tensor([0, 1, 0, 0])))
    torch.testing.assert_close(a, b[[2, 0]], atol=ATOL, rtol=0)
    assert resolve(ModelConfig(arch="rmt", segment=8, n_mem=3))["segment"] == 8
    with pytest.raises(ValueError, match="no setting segment"):
        resolve(ModelConfig(arch="lstm", segment=8))
    with pytest.raises(ValueError):
        resolve(ModelConfig(arch="rmt", segment=0))
