"""ToolEnv: a task as a gymnasium environment. gymnasium's own checker passes for addition, Hanoi and the logical
graph; following info["expert_action"] earns reward 1, a wrong or empty answer 0; reset(seed=) is deterministic."""

import pytest

gym = pytest.importorskip("gymnasium", reason="gymnasium is not installed (the gym extra)")

from gymnasium.utils.env_checker import check_env  # noqa: E402

from toolssm.env import ToolEnv  # noqa: E402
from toolssm.protocol import ANS, EOS  # noqa: E402

TASKS = [("addition", 5), ("hanoi", 3), ("logic-graph", 5)]


def play(env, seed, policy=None):
    """Play one episode: the expert's action, or ``policy(k, expert_action)`` when given. -> (reward, infos, n)."""
    obs, info = env.reset(seed=seed)
    assert env.observation_space.contains(obs) and len(obs) > 0  # [BOS] and the input (or [BOS] alone)
    infos, k = [info], 0
    while True:
        a = info["expert_action"] if policy is None else policy(k, info["expert_action"])
        obs, reward, terminated, truncated, info = env.step(a)
        assert env.observation_space.contains(obs)
        infos.append(info)
        k += 1
        if terminated or truncated:
            return reward, infos, terminated


@pytest.mark.parametrize("task, size", TASKS)
def test_check_env_passes(task, size):
    check_env(ToolEnv(task, size), skip_render_check=True)


@pytest.mark.parametrize("task, size", TASKS)
def test_the_expert_earns_one_and_a_wrong_answer_zero(task, size):
    env = ToolEnv(task, size)
    reward, infos, terminated = play(env, seed=11)
    assert terminated and reward == 1.0 and infos[-1]["verdict"] is True
    assert all(i["expert_action"] >= 0 for i in infos[:-1]) and infos[-1]["expert_action"] == -1
    roles = {i["role"] for i in infos}
    assert "input" in roles and "command" in roles  # the expert drives the tool
    assert all(i["verdict"] is None for i in infos[:-1])  # reward only at the end
    # an empty answer: [EOS] at once
    eos = env.vocab.id(EOS)
    reward, infos, terminated = play(env, seed=11, policy=lambda k, e: eos)
    assert terminated and reward == 0.0 and infos[-1]["verdict"] is False


def test_a_wrong_digit_earns_zero_and_leaves_the_experts_path():
    env = ToolEnv("addition", 6)
    _, infos, _ = play(env, seed=5)
    answering, flip = False, None
    for k, info in enumerate(infos[:-1]):  # the first output digit after [ANS]
        tok = env.vocab.token(info["expert_action"])
        if answering and tok.isdigit():
            flip = (k, env.vocab.id(str((int(tok) + 1) % 10)))
            break
        answering = answering or tok == ANS
    assert flip is not None
    actions = [i["expert_action"] for i in infos[:-1]]  # the expert's, replayed: one digit changed
    reward, infos, terminated = play(env, seed=5, policy=lambda k, e: flip[1] if k == flip[0] else actions[k])
    assert reward == 0.0 and infos[-1]["verdict"] is False
    assert infos[flip[0]]["expert_action"] >= 0 and infos[flip[0] + 1]["expert_action"] == -1  # off its path


def test_reset_seed_draws_the_same_problem_and_size_is_checked():
    env = ToolEnv("addition", "8")
    a, ia = env.reset(seed=3)
    b, ib = env.reset(seed=3)
    c, ic = env.reset(seed=4)
    assert a == b and ia["problem"] == ib["problem"] and ia["problem"] != ic["problem"]
    assert all(len(side) == 8 for side in ia["problem"].rstrip("=").split("+"))  # a problem of the given size
    with pytest.raises(ValueError, match="bad size"):
        ToolEnv("addition", "0")
    with pytest.raises(ValueError, match="bad action"):
        env.step(len(env.vocab))
