"""The k-gram learner (models/kgram.py): Theorem 2.2's table learner as a model, trained by counting."""

import random

import numpy as np

import pytest
import torch

from toolssm.checkpoint import load_checkpoint
from toolssm.evaluate import evaluate
from toolssm.models import ModelConfig, build_model
from toolssm.protocol import Episode
from toolssm.rollout import rollout
from toolssm.tasks import get_task
from toolssm.tasks.turing_machines import DEMOS, TableLearner
from toolssm.theory.turing import training_traces
from toolssm.train import TrainConfig, collate, fit, make_batch


def counted(task_name="addition", window=7, steps=3, batch_size=16, train_size=5):
    task = get_task(task_name)
    vocab = task.vocab()
    cfg = TrainConfig(task=task_name, train_size=train_size, batch_size=batch_size)
    model = build_model("kgram", len(vocab), {"window": window})
    for step in range(steps):
        model.fit_counts(*make_batch(task, vocab, cfg, step))
    return task, vocab, model


def test_parallel_forward_equals_step_and_prefill_on_a_filled_table():
    task, vocab, model = counted()
    tokens, _ = collate([task.demonstrate(task.sample(random.Random(i), 7)) for i in range(3)], vocab)
    with torch.no_grad():
        full, _ = model(tokens)
        state, steps = None, []
        for t in range(tokens.shape[1]):
            logits, state = model.step(tokens[:, t], state)
            steps.append(logits)
        pre, st = model(tokens[:, :40])
        rest = []
        for t in range(40, tokens.shape[1]):
            logits, st = model.step(tokens[:, t], st)
            rest.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=0, rtol=0)
    torch.testing.assert_close(torch.cat([pre, torch.stack(rest, 1)], 1), full, atol=0, rtol=0)
    assert state[0].shape == (3, 7)  # the state is the last k tokens, whatever the length
    assert (full.argmax(-1) != model.stop).any()  # the table predicts: not only [EOS]


def test_an_unseen_context_gets_the_stop_token_and_the_stop_token_is_learned():
    model = build_model("kgram", 12, {"window": 2})
    assert (model(torch.tensor([[5, 6, 7]]))[0].argmax(-1) == 2).all()  # empty table: [EOS]'s id everywhere
    tokens = torch.tensor([[1, 4, 5, 9, 0], [1, 4, 6, 5, 9]])  # every row ends with 9 (0 pads)
    mask = torch.tensor([[0, 0, 1, 1, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)
    model.fit_counts(tokens, mask)
    assert int(model.stop) == 9
    pred = model(torch.tensor([[1, 4, 6, 5, 3]]))[0].argmax(-1)[0].tolist()
    # after (4): 5 or 6 (a conflict, so one more token back: (1,4) was followed by both: the most frequent,
    # tie to the smaller id, 5); after (4,6): 5; after (6,5): 9; (5,3) and (3) never seen: the stop token
    assert pred[1:] == [5, 5, 9, 9]
    assert pred[0] == 9  # (1) alone was never a context of a trained position


def test_the_table_survives_a_checkpoint_and_resume_continues_the_count(tmp_path, stop_training_at):
    kw = dict(task="addition", model=ModelConfig(arch="kgram", window=7), batch_size=8, steps=4, save_every=1,
              progress=False)  # fmt: skip
    ckpt, model = fit(TrainConfig(out=str(tmp_path / "straight"), **kw))
    restore = stop_training_at(2)
    with pytest.raises(KeyboardInterrupt):
        fit(TrainConfig(out=str(tmp_path / "resumed"), **kw))
    restore()
    _, resumed = fit(TrainConfig(out=str(tmp_path / "resumed"), resume=True, **kw))
    loaded = load_checkpoint(ckpt)
    assert loaded.model.rows.shape[0] > 100 and torch.equal(loaded.model.rows, model.rows)
    assert torch.equal(resumed.rows, model.rows)  # 2 steps, stop, 2 more == 4 straight
    task = get_task("addition")
    tokens, _ = collate([task.demonstrate(task.sample(random.Random(1), 5))], loaded.vocab)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(tokens)[0], model(tokens)[0], atol=0, rtol=0)


def test_counted_on_five_digit_addition_it_is_exact_at_a_thousand_digits(tmp_path):
    """960 problems of <= 5 digits, counted in seconds: every context of the 1,000-digit trajectories was seen
    (36,000 tokens each, no error). The table learner of Theorem 2.2, on a task whose policy is local."""
    cfg = TrainConfig(task="addition", model=ModelConfig(arch="kgram", window=7), steps=30, batch_size=32,
                      out=str(tmp_path / "run"), progress=False)  # fmt: skip
    _, model = fit(cfg)
    task = get_task("addition")
    (r,) = evaluate(model, task, task.vocab(), ["1000"], n_problems=2, with_token_acc=False, progress=False)
    assert r.answer_acc == 1.0 and r.trajectory_acc == 1.0 and r.tokens_per_problem > 30_000


def _drive(learner: TableLearner, demo, x):
    ep = Episode(demo.machine.tool(), x, record=True, show_input=False, max_tokens=10**6)
    ep.reset()
    learner.drive(ep)
    return ep


@pytest.mark.parametrize("machine", sorted(DEMOS))
def test_on_turing_machine_traces_it_matches_the_table_learner_token_for_token(machine):
    """Counted on the same compiled traces as theory's table learner, the k-gram learner (k = 5, the traces'
    policy window) writes the same trajectory on longer inputs, where both are right and where both stop at
    a pair the traces never showed. Its shortest deciding context is (state, [read], symbol): the (q, s) key."""
    task, demo = get_task(f"tm-{machine}"), DEMOS[machine]
    vocab = task.vocab()
    rng = random.Random(0)
    outcomes = set()
    for n0, per in ((2, 4), (3, 8), (5, 20)):
        traces = training_traces(demo, n0, per)
        table = TableLearner().fit(traces)
        model = build_model("kgram", len(vocab), {"window": 5})
        model.fit_counts(*collate(traces, vocab))
        for n in (4, 9, 16):
            x = demo.sample(rng, n)
            ref = _drive(table, demo, x)
            (got,) = rollout(model, vocab, [task.episode(tuple(x), record=True, max_tokens=ref.n_generated + 64)])
            assert got.trajectory.tokens == ref.trajectory.tokens, (n0, n)
            outcomes.add(ref.output == demo.truth(x))
    if machine != "increment":  # increment's traces cover its table from two lengths on
        assert outcomes == {True, False}  # agreement was tested where the table learner fails, and where not


def test_counting_batch_by_batch_merges_into_the_table_counting_all_at_once_makes():
    """`merge_rows` adds a batch to the sorted table without re-sorting it (what made k > 32 slow): the result
    is the table of every row counted at once, and its rule (`from_rows`) is `best_next`'s on the raw rows."""
    from toolssm.locality import ContextTable, best_next
    from toolssm.models.kgram import distinct_rows, merge_rows

    rng = np.random.default_rng(0)
    batches = [np.stack([rng.integers(1, 4, n), rng.integers(-30, 30, n) * 2**57, rng.integers(1, 5, n),
                         np.ones(n, dtype=np.int64)], 1) for n in (50, 1, 80, 0, 40)]  # fmt: skip
    table = np.zeros((0, 4), dtype=np.int64)
    for b in batches:
        table = merge_rows(table, distinct_rows(b) if len(b) else None)
    every = np.concatenate(batches)
    assert np.array_equal(table, distinct_rows(every)) and table[:, 3].sum() == len(every)
    got = ContextTable.from_rows(3, table)
    shuffled = ContextTable.from_rows(3, table[rng.permutation(len(table))])  # unsorted rows: sorted first
    for j, (keys, nxt, conflicted) in enumerate(got.tables, 1):
        want = best_next(every[every[:, 0] == j, 1], every[every[:, 0] == j, 2])
        assert all(np.array_equal(a, b) for a, b in zip((keys, nxt, conflicted), want))
        assert all(np.array_equal(a, b) for a, b in zip(shuffled.tables[j - 1], want))
    assert all(t[2].any() and not t[2].all() for t in got.tables)  # both kinds of context, at every length


def test_past_k_32_the_counted_model_writes_the_analysis_table_token_for_token():
    """Oolong's policy window is above 32 (the running tally is copied across an example): counted with that
    window, the model's next token at every generated position is the analysis table's (the stop token where
    the context is unseen), on trajectories longer than training's."""
    from toolssm.analysis import Encoded, analyze, context_table, eval_problems, training_problems
    from toolssm.locality import context_keys

    task = get_task("oolong")
    vocab = task.vocab()
    a = analyze(task, 5, ["5"], steps=4, batch_size=16, n_problems=1, by_train_size=False)
    assert a.k > 32
    model = build_model("kgram", len(vocab), {"window": a.k})
    cfg = TrainConfig(task="oolong", train_size=5, batch_size=16)
    for step in range(4):
        model.fit_counts(*make_batch(task, vocab, cfg, step))
    table = context_table([Encoded.of(task.demonstrate(p), vocab) for p in training_problems(task, 5, 4, 16, 0)], a.k)
    assert len(table) == len(model.table)
    trajs = [task.demonstrate(p) for p in eval_problems(task, "12", 3, 1234)]
    tokens, mask = collate(trajs, vocab)
    with torch.no_grad():
        got = model(tokens)[0].argmax(-1)

    n_unseen = 0
    for i, traj in enumerate(trajs):
        e = Encoded.of(traj, vocab)
        at = np.flatnonzero(e.gen)
        nxt, _ = table.predict([key[at] for key in context_keys(e.ids, a.k)])
        n_unseen += int((nxt == 0).sum())
        want = np.where(nxt == 0, int(model.stop), nxt - 1)
        assert got[i, at - 1].tolist() == want.tolist()
    assert 0 < n_unseen < sum(len(t) for t in trajs)
