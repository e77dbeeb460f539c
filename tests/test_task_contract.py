"""The task contract, checked for every registered task (plugins included), as tests/test_models.py does for models.

For each task:
- **expert replay at a large size** (``Task.replay_spec``, far past training) and at training sizes: the expert's
  generated tokens, fed to a fresh episode, reproduce every observation of its tool, and ``verify`` on the finished
  episode grades it correct;
- **the verifier rejects a corrupted answer**: the episode cut short (the first half of the expert's generated
  tokens, then ``[EOS]``), and the expert's answer with one token too many;
- **the vocabulary covers every trajectory token** (an id for each, the observations' too);
- **a deterministic ``repr`` of a problem**: the same seed draws a problem with the same repr, in another process
  with another hash seed too (a problem can be named in a record or a log).

A task trained from stored trajectories (code fixing) gets a few collected with ``Task.make_data`` first, for its
tokenizer. Tasks that need the sandbox skip, with the reason, where it cannot run.
"""

import json
import os
import random
import subprocess
import sys

import pytest

from toolssm.protocol import ANS, EOS, Role
from toolssm.tasks import answered, get_task, task_names
from toolssm.tools.shell import SandboxUnavailable

_READY: dict = {}


def ready(name: str, tmp_path_factory):
    """The task, with its assets when it trains from stored trajectories (a few collected for its tokenizer)."""
    if name not in _READY:
        task = get_task(name)
        try:
            task.vocab()
        except ValueError:  # no vocabulary without assets: collect a little data and load them
            folder = tmp_path_factory.mktemp(f"data-{name}")
            try:
                task.make_data(folder / "t.jsonl", count=4, max_size=6, log=lambda s: None)
            except SandboxUnavailable as e:
                pytest.skip(f"task {name} needs the sandbox: {e}")
            task.load_assets(folder)
        _READY[name] = task
    return _READY[name]


def generated(traj) -> list[str]:
    """The tokens the expert generated (what a model would), not the input or the tool's observations."""
    return [t for t, r in zip(traj.tokens, traj.roles) if r not in (Role.INPUT, Role.OBSERVATION)]


@pytest.mark.parametrize("name", task_names())
def test_expert_replays_exactly_and_is_graded_correct_at_a_large_size(name, tmp_path_factory):
    task = ready(name, tmp_path_factory)
    problem = task.sample_eval(random.Random(f"contract:{name}"), task.replay_spec)
    traj = task.demonstrate(problem)
    assert traj.tokens[-1] == EOS and traj.roles[0] == Role.INPUT
    with task.replay(problem, traj) as ep:
        assert ep.terminated and not ep.truncated
        assert (ep.trajectory.tokens, ep.trajectory.roles) == (traj.tokens, traj.roles)
        verdict = task.verify(problem, ep)
    assert verdict.correct, (verdict.expected[:80], verdict.got[:80])
    assert len(generated(traj)) <= task.token_budget(problem)  # the budget counts generated tokens


@pytest.mark.parametrize("name", task_names())
def test_expert_replays_exactly_at_training_sizes(name, tmp_path_factory):
    task = ready(name, tmp_path_factory)
    rng = random.Random(f"train:{name}")
    for _ in range(3):
        problem = task.sample(rng, 6)
        traj = task.demonstrate(problem)
        with task.replay(problem, traj) as ep:
            assert (ep.trajectory.tokens, ep.trajectory.roles) == (traj.tokens, traj.roles)
            assert task.verify(problem, ep).correct


@pytest.mark.parametrize("name", task_names())
def test_the_verifier_rejects_a_corrupted_answer(name, tmp_path_factory):
    task = ready(name, tmp_path_factory)
    rng = random.Random(f"corrupt:{name}")
    for spec in ("5", "9"):
        problem = task.sample_eval(rng, spec)
        traj = task.demonstrate(problem)
        gen = generated(traj)
        # cut short: the first half of the expert's tokens, then [EOS] (the tool answers as it would have)
        with task.episode(problem) as ep:
            ep.reset()
            for t in [t for t in gen[: len(gen) // 2] if t != EOS] + [EOS]:
                ep.step(t)
            assert ep.terminated
            assert not task.verify(problem, ep).correct, f"{name} accepts half of the expert's episode"
        # one token too many: the whole answer, then a copy of its last token
        out = traj.output()
        if out:  # a task graded on its tool alone (code fixing) writes no answer to corrupt
            with task.replay(problem, traj) as ep:
                assert task.verify(problem, ep).correct
            assert not task.verify(problem, answered([*out, out[-1]])).correct, f"{name} accepts {out + out[-1:]}"
            assert not task.verify(problem, answered([ANS, *out])).correct or ANS in out


@pytest.mark.parametrize("name", task_names())
def test_the_vocabulary_covers_every_trajectory_token(name, tmp_path_factory):
    task = ready(name, tmp_path_factory)
    vocab = task.vocab()
    assert vocab.tokens[0] == "[PAD]" and EOS in vocab and ANS in vocab
    rng = random.Random(f"vocab:{name}")
    problems = [task.sample(rng, 6) for _ in range(3)] + [task.sample_eval(rng, "9")]
    for p in problems:
        traj = task.demonstrate(p)
        missing = sorted(set(traj.tokens) - set(vocab.tokens))
        assert not missing, f"{name}: trajectory tokens without an id: {missing[:10]}"
        assert len(vocab.ids(traj.tokens)) == len(traj)


_REPRS = """
import json, random, sys
from toolssm.tasks import get_task
print(json.dumps({n: repr(get_task(n).sample_eval(random.Random("repr:" + n), "7")) for n in sys.argv[1:]}))
"""


def test_a_problem_has_a_deterministic_repr_across_processes():
    names = task_names()
    here = {n: repr(get_task(n).sample_eval(random.Random("repr:" + n), "7")) for n in names}
    again = {n: repr(get_task(n).sample_eval(random.Random("repr:" + n), "7")) for n in names}
    assert here == again
    for n, r in here.items():
        assert " at 0x" not in r, f"{n}: the repr of a problem names a memory address: {r[:80]}"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # another process, another string hash: no set order leaks in
    out = subprocess.run([sys.executable, "-c", _REPRS, *names], capture_output=True, text=True, env=env, check=True)
    assert json.loads(out.stdout) == here
