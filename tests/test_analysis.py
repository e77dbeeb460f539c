"""Predicting length generalization from expert trajectories (toolssm.analysis, docs/analysis.md)."""

import random

import numpy as np
import pytest

from toolssm.analysis import (
    Encoded,
    Exchangeable,
    analyze,
    check_size,
    conflict,
    context_table,
    eval_problems,
    training_problems,
    window,
)
from toolssm.cli import main
from toolssm.evaluate import evaluate
from toolssm.locality import window_conflict
from toolssm.models import ModelConfig
from toolssm.protocol import ANS
from toolssm.tasks import answered, get_task
from toolssm.tasks.addition import Addition, read_back
from toolssm.tools.pointer import command, walk_right
from toolssm.train import TrainConfig, fit


class TwoPointerAddition(Addition):
    """The paper-literal trajectory (App. D.3, docs/design.md): pointer 2 finds b's last digit, and after the
    sum reads the answer back too, walking right over b again. At the `=` it meets on that walk it must go on,
    where in phase 2 it turned back: only the [ANS] before the walk tells them apart, |b| iterations back."""

    name = "addition-two-pointer"

    def expert(self, problem, episode):
        act = episode.act
        walk_right(act, 1, "+")
        act(command(1, "left"))
        walk_right(act, 2, "=")
        act(command(2, "left"))
        carry = 0
        while True:
            x, y = act(command(1, "read"))[0], act(command(2, "read"))[0]
            dx, dy = x.isdigit(), y.isdigit()
            if not dx and not dy and carry == 0:
                act(ANS)
                break
            s = (int(x) if dx else 0) + (int(y) if dy else 0) + carry
            carry = s // 10
            act(str(s % 10), ("c0", "c1")[carry])
            if dx:
                act(command(1, "left"))
            if dy:
                act(command(2, "left"))
        read_back(act, 2)


def sample_at(task, n, count=6):
    vocab = task.vocab()
    return [Encoded.of(task.demonstrate(p), vocab) for p in eval_problems(task, str(n), count, 0)]


def test_the_two_pointer_read_back_counts_its_window_grows_with_the_size():
    task = TwoPointerAddition()
    p = task.sample_eval(random.Random(0), "7")
    assert task.verify(p, answered(task.demonstrate(p).output())).correct
    ks = [window(sample_at(task, n)) for n in (2, 4, 8)]
    assert ks[0] < ks[1] < ks[2], ks  # 3 tokens per digit of b ([p2.right] [p2.read] digit): it counts


def test_the_three_pointer_trajectory_keeps_one_window_at_every_size():
    task = get_task("addition")
    assert [window(sample_at(task, n)) for n in (2, 4, 8, 30)] == [7, 7, 7, 7]


def test_the_hashed_conflict_check_agrees_with_the_token_tuple_one():
    task = TwoPointerAddition()
    trajs = [task.demonstrate(p) for p in eval_problems(task, "3", 5, 1)]
    enc = [Encoded.of(t, task.vocab()) for t in trajs]
    for k in (1, 3, 6, 12, 18, 30):
        assert (conflict(enc, k) is None) == (window_conflict(trajs, k) is None), k


def _strict(name, sizes):
    task = get_task(name)
    same = Exchangeable(task.vocab(), r"\(\d+\)")
    sample = [Encoded.of(task.demonstrate(p), same.vocab, same) for p in training_problems(task, 5, 4, 32, 0)]
    table = context_table(sample, window(sample))
    return {n: check_size(task, same.vocab, table, eval_problems(task, str(n), 4, 1234), str(n), same=same,
                          window_of_size=False) for n in sizes}  # fmt: skip


def test_iterative_hanoi_trained_from_a_to_c_meets_unseen_contexts_one_disk_up():
    """docs/tasks/hanoi.md found by hand that 6 disks bring (cycle, rank, from, to) moves no problem of <= 5
    disks makes, such as ('+', 3, 'C', 'A'). The strict coverage finds it: a move from C to A followed by the
    + cycle's header, after which the expert writes +s, never occurs in training from A to C."""
    r = _strict("hanoi-fixed", (5, 6))
    assert r[5].k_covered == 1.0 and r[6].k_covered == 0.0
    f = r[6].first_k_unseen
    assert f.context[-5:] == ["C", "A", "$", "[p1.read]", "+o"] and f.expert == "+s"


def test_relabelled_hanoi_has_seen_every_context_at_six_and_seven_disks():
    r = _strict("hanoi", (6, 7))
    assert r[6].k_covered == r[7].k_covered == 1.0 and r[6].first_k_unseen is None


def test_without_exchangeable_disks_hanoi_contexts_are_unseen_from_the_first_token():
    """Hanoi's 100 disk tokens: a raw-token table needs every context with every disk in it."""
    a = analyze(get_task("hanoi"), 5, ["6"], steps=2, n_problems=2, by_train_size=False)
    assert a.sizes[0].covered == 0.0 and "(" in " ".join(a.sizes[0].first_unseen.context)


def test_the_prediction_is_the_kgram_learners_measured_trajectory_match(tmp_path):
    """The analysis draws the problems train and eval draw, and applies the learner's rule: its exact fraction
    at each size is the k-gram learner's trajectory exact match, measured."""
    sizes = ["<=5", "5", "12"]
    a = analyze(get_task("addition"), 5, sizes, steps=16, batch_size=16, n_problems=12, by_train_size=False)
    assert all(0 < r.exact < 1 for r in a.sizes)  # a partial table (256 problems): the test can tell
    cfg = TrainConfig(task="addition", model=ModelConfig(arch="kgram", window=a.k), steps=16, batch_size=16,
                      out=str(tmp_path / "run"), progress=False)  # fmt: skip
    _, model = fit(cfg)
    task = get_task("addition")
    measured = evaluate(model, task, task.vocab(), sizes, n_problems=12, with_token_acc=False, progress=False)
    assert [r.trajectory_acc for r in measured] == [r.exact for r in a.sizes]
    first = a.sizes[2].first_unseen or a.sizes[2].first_wrong
    assert first is not None and all(isinstance(t, str) for t in first.context)  # in the task's own tokens


def test_analyze_prints_the_prediction_and_refuses_bad_input_in_one_line(capsys):
    assert main(["analyze", "--task", "addition", "--sizes", "5", "20", "--steps", "2", "--n-problems", "3",
                 "--no-progress"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "policy window 7" in out and "predicted (k-gram learner): 5→" in out
    for bad in (["--k", "99"], ["--sizes", "zero"], ["--steps", "0"], ["--task", "nope"]):
        assert main(["analyze", *bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("toolssm: error:") and len(err.strip().splitlines()) == 1, err


def test_the_window_by_training_size_skips_sizes_the_task_has_no_problems_of():
    """A logical graph has at least 6 nodes: no training problem is of size <= 2 (this once crashed)."""
    a = analyze(get_task("logic-graph"), 10, ["11"], steps=1, batch_size=8, n_problems=1)
    assert min(a.k_by_train_size) > 2 and a.k_by_train_size[10] == a.policy_window
    assert window([]) == 1  # no positions: vacuously a function of any window


@pytest.mark.parametrize("k", [1, 4])
def test_window_keys_tell_windows_apart_exactly_as_tuples_do(k):
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 4, size=400)
    from toolssm.locality import context_keys

    *_, keys = context_keys(ids, k)
    tuples = [tuple(ids[max(0, i - k) : i]) for i in range(len(ids))]
    by_key = {}
    for key, tup in zip(keys.tolist(), tuples):
        assert by_key.setdefault(key, tup) == tup  # no two windows share a key
    assert len(by_key) == len(set(tuples))


def test_analyze_data_takes_the_training_sample_from_a_stored_file_as_train_data_does(tmp_path, capsys):
    """`analyze --data FILE`: the training sample is what `train --data FILE` draws (a dataset file: its
    records in order). A file written with seed 7 gives the analysis of seed 7's online sample, not seed 0's."""
    from toolssm.data import load_stored, records, write_dataset

    task = get_task("addition")
    path = write_dataset(tmp_path / "seed7.jsonl", records(task, 3, 8, seed=7, batch_size=4))
    stored = analyze(task, 3, ["4"], steps=2, batch_size=4, n_problems=6, data=load_stored(task, path))
    online7 = analyze(task, 3, ["4"], steps=2, batch_size=4, seed=7, n_problems=6, by_train_size=False)
    online0 = analyze(task, 3, ["4"], steps=2, batch_size=4, seed=0, n_problems=6, by_train_size=False)
    key = lambda a: (a.k, a.contexts, a.train_tokens, [(r.exact, r.unseen, r.wrong) for r in a.sizes])  # noqa: E731
    assert key(stored) == key(online7) != key(online0)
    assert stored.stored == 8 and stored.n_train == 8 and stored.k_by_train_size == {}
    assert main(["analyze", "--task", "addition", "--data", str(path), "--train-size", "3", "--sizes", "4",
                 "--steps", "2", "--batch-size", "4", "--n-problems", "6", "--no-progress"]) == 0  # fmt: skip
    assert "trained on 8 draws from 8 stored trajectories" in capsys.readouterr().out
    for bad in ([str(tmp_path / "missing.jsonl"), "--sizes", "4"], [str(path), "--sizes", "zero"]):
        assert main(["analyze", "--task", "addition", "--data", *bad, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("toolssm: error:") and len(err.strip().splitlines()) == 1, err
