import json
import random

import pytest
import torch

from toolssm.batching import collate
from toolssm.models import ModelConfig
from toolssm.tasks import get_task
from toolssm.train import TrainConfig, make_batch, mixed_vocab, parse_mix, train


def make_batch_before_mixtures(task, vocab, cfg, step):
    """make_batch as it was before TrainConfig.mix existed."""
    rng = random.Random(f"{cfg.seed}:{step}")
    return collate([task.demonstrate(task.sample(rng, cfg.train_size)) for _ in range(cfg.batch_size)], vocab)


@pytest.mark.parametrize("name", ["addition", "multiplication-x2"])
def test_without_mix_batches_are_bit_identical_to_before(name):
    task = get_task(name)
    cfg = TrainConfig(task=name, batch_size=8, seed=3, train_size=6)
    vocab = mixed_vocab(task, parse_mix(cfg))
    assert vocab == task.vocab()  # a run without mix keeps its vocabulary
    for step in (0, 17):
        new, old = make_batch(task, vocab, cfg, step), make_batch_before_mixtures(task, vocab, cfg, step)
        assert torch.equal(new[0], old[0]) and torch.equal(new[1], old[1])


def test_with_mix_the_batch_holds_both_tasks_at_about_the_weight():
    task = get_task("multiplication-x2")
    cfg = TrainConfig(task="multiplication-x2", mix=("addition:0.33",), batch_size=200, train_size=5)
    vocab = mixed_vocab(task, parse_mix(cfg))
    n_add = n = 0
    for step in range(3):
        tokens, _ = make_batch(task, vocab, cfg, step)
        is_add = ~(tokens == vocab.id("*")).any(1)  # every multiplication has a `*`, no addition has one
        n_add, n = n_add + int(is_add.sum()), n + len(tokens)
    assert n_add / n == pytest.approx(0.33, abs=0.05)
    a, b = make_batch(task, vocab, cfg, 5), make_batch(task, vocab, cfg, 5)  # still a function of (seed, step)
    assert torch.equal(a[0], b[0])


def test_three_tasks_mix():
    cfg = TrainConfig(task="multiplication-x1", mix=("addition:0.2", "subtraction:0.5"), batch_size=300)
    task = get_task(cfg.task)
    vocab = mixed_vocab(task, parse_mix(cfg))
    tokens, _ = make_batch(task, vocab, cfg, 0)
    ops = [next(vocab.token(i) for i in row.tolist() if vocab.token(i) in {"*", "+", "-"}) for row in tokens]
    assert ops.count("-") / len(ops) == pytest.approx(0.5, abs=0.08)
    assert ops.count("+") / len(ops) == pytest.approx(0.2, abs=0.06)


def test_mixed_vocabulary_is_the_union_with_the_primary_first():
    task, aux = get_task("addition"), get_task("multiplication-x2")
    vocab = mixed_vocab(task, parse_mix(TrainConfig(task="addition", mix=("multiplication-x2:0.5",))))
    n = len(task.vocab())
    assert vocab.tokens[:n] == task.vocab().tokens
    assert set(vocab.tokens) == set(task.vocab().tokens) | set(aux.vocab().tokens)
    assert len(vocab.tokens) == len(set(vocab.tokens))


@pytest.mark.parametrize(
    "mix",
    [("addition",), ("addition:0",), ("addition:1",), ("addition:1.5",), ("addition:x",), ("nope:0.3",),
     (":0.3",), ("addition:0.3", "addition:0.2"), ("multiplication-x2:0.3",), ("addition:0.6", "subtraction:0.4"),
     ("addition:nan",)],
)  # fmt: skip
def test_bad_mix_entries_are_rejected_in_one_line(mix):
    cfg = TrainConfig(task="multiplication-x2", mix=mix)
    with pytest.raises(ValueError) as e:
        cfg.validate()
    assert "\n" not in str(e.value)


def test_a_mixed_run_trains_and_keeps_the_primary_task(tmp_path):
    cfg = TrainConfig(
        task="multiplication-x2", mix=("subtraction:0.33",), model=ModelConfig(d_model=16, n_layers=1), steps=3,
        batch_size=4, warmup=1, save_every=3, log_every=1, out=str(tmp_path), progress=False, train_size=3,
    )  # fmt: skip
    train(cfg)
    saved = json.loads((tmp_path / "checkpoint/config.json").read_text())
    assert saved["task"] == "multiplication-x2"
    assert "b1" in saved["vocab"] and "c8" in saved["vocab"]  # the borrow token comes from subtraction
    assert saved["vocab"][: len(get_task("multiplication-x2").vocab())] == get_task("multiplication-x2").vocab().tokens
    cfg.mix, cfg.resume = (), True  # another vocabulary: resuming is refused in one line
    with pytest.raises(ValueError, match="cannot resume"):
        train(cfg)
