"""The rollout, driven by scripted models so that it is tested apart from training."""

import random

import torch

from toolssm.models import SequenceModel
from toolssm.protocol import EOS
from toolssm.rollout import rollout
from toolssm.tasks import answered, get_task

task = get_task("addition")
vocab = task.vocab()


class ReplayModel(SequenceModel):
    """Predicts the next token of a fixed reference sequence per batch row. State: (row id, position)."""

    def __init__(self, refs):
        super().__init__()
        self.refs = refs

    def forward(self, tokens, state=None):
        B, T = tokens.shape
        rows, pos = state if state is not None else (torch.arange(B), torch.zeros(B, dtype=torch.long))
        logits = torch.full((B, T, len(vocab)), -1e9)
        for b in range(B):
            ref = self.refs[int(rows[b])]
            for t in range(T):
                p = int(pos[b]) + t + 1
                logits[b, t, ref[p] if p < len(ref) else vocab.id(EOS)] = 0.0
        return logits, (rows, pos + T)


class Babbler(SequenceModel):
    """Always says "5": never ends, so the episode must be truncated."""

    def forward(self, tokens, state=None):
        logits = torch.full((*tokens.shape, len(vocab)), -1e9)
        logits[..., vocab.id("5")] = 0.0
        return logits, (torch.zeros(tokens.shape[0], 1),)


def test_replaying_the_expert_reproduces_trajectories_of_mixed_lengths():
    rng = random.Random(0)
    problems = [task.sample_eval(rng, s) for s in ["1", "40", "3+17", "200", "7"]]
    refs = [task.demonstrate(p) for p in problems]
    eps = [task.episode(p, record=True, max_tokens=task.token_budget(p)) for p in problems]
    results = rollout(ReplayModel([vocab.ids(r.tokens) for r in refs]), vocab, eps,
                      references=[vocab.ids(r.tokens) for r in refs])  # fmt: skip
    for p, ref, res in zip(problems, refs, results):
        assert res.terminated and not res.truncated
        assert res.trajectory_match is True
        assert res.trajectory.tokens == ref.tokens and res.trajectory.roles == ref.roles
        assert res.n_tokens == len(ref)
        assert task.verify(p, answered(res.output)).correct


def test_a_wrong_reference_is_reported_as_a_trajectory_mismatch():
    p = task.parse("12+34")
    ref = vocab.ids(task.demonstrate(p).tokens)
    other = vocab.ids(task.demonstrate(task.parse("12+35")).tokens)
    (res,) = rollout(ReplayModel([ref]), vocab, [task.episode(p, max_tokens=10_000)], references=[other])
    assert res.trajectory_match is False
    assert task.verify(p, answered(res.output)).correct  # the answer can be right while the trajectory differs


def test_budget_exhaustion_is_truncated_not_terminated():
    eps = [task.episode(task.parse("1+1"), max_tokens=50), task.episode(task.parse("22+1"), max_tokens=7)]
    results = rollout(Babbler(), vocab, eps)
    assert [r.n_generated for r in results] == [50, 7]
    assert all(r.truncated and not r.terminated for r in results)
    assert results[0].trajectory_match is None
