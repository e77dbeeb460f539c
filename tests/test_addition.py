import random

import pytest

from toolssm.protocol import Role
from toolssm.tasks import answered, get_task
from toolssm.tasks.addition import add_decimal

task = get_task("addition")


@pytest.mark.parametrize(
    "text, expected",
    [("9999999999+1", "10000000000"), ("0+0", "0"), ("1+99999", "100000"), ("1000000+0", "1000000"),
     ("123+0000", "123"), ("5+5", "10")],
)  # fmt: skip
def test_expert_on_adversarial_inputs(text, expected):
    p = task.parse(text)
    assert "".join(task.demonstrate(p).output()) == expected


def test_verifier_rejects_wrong_answers():
    p = task.parse("57+8")
    assert task.verify(p, answered("65")).correct
    for bad in ["66", "56", "065", "", "6", "651"]:
        assert not task.verify(p, answered(bad)).correct


def test_add_decimal_matches_python_ints():
    rng = random.Random(0)
    for _ in range(500):
        a, b = rng.randrange(10 ** rng.randint(1, 30)), rng.randrange(10 ** rng.randint(1, 30))
        assert add_decimal(str(a), str(b)) == str(a + b)


def test_training_distribution_draws_each_length_uniformly_and_independently():
    rng = random.Random(0)
    lens = [(len(p.a), len(p.b)) for p in (task.sample(rng, 5) for _ in range(4000))]
    assert {a for a, _ in lens} == {1, 2, 3, 4, 5} == {b for _, b in lens}
    assert sum(a == b for a, b in lens) / len(lens) == pytest.approx(0.2, abs=0.03)


def test_eval_sizes_and_user_pairs():
    rng = random.Random(0)
    p = task.sample_eval(rng, "1000")
    assert len(p.a) == len(p.b) == 1000 and p.a[0] != "0"
    p = task.sample_eval(rng, "30+2")
    assert (len(p.a), len(p.b)) == (30, 2)
    for bad in ["-3", "0", "x", "1+2+3"]:
        with pytest.raises(ValueError):
            task.parse_spec(bad)
    for bad in ["1-2", "abc", "+3", ""]:
        with pytest.raises(ValueError):
            task.parse(bad)


def test_expert_policy_is_local_every_loop_has_its_own_pointer():
    """Within a loop, consecutive commands use one pointer; the read-back loop uses a pointer of its own."""
    traj = task.demonstrate(task.parse("12345+678"))
    cmds = [t for t, r in zip(traj.tokens, traj.roles) if r == Role.COMMAND]
    ans = traj.tokens.index("[ANS]")
    after = [t for t, r in zip(traj.tokens[ans:], traj.roles[ans:]) if r == Role.COMMAND]
    assert after and all(c.startswith("[p3.") for c in after)
    assert not any(c.startswith("[p3.") for c in cmds[: len(cmds) - len(after)])


def test_the_model_never_reads_the_input_only_the_pointers_do():
    """Nothing the model consumes grows with the input: its context starts with [BOS] alone."""
    traj = task.demonstrate(task.parse("5" * 300 + "+7"))
    assert [t for t, r in zip(traj.tokens, traj.roles) if r == Role.INPUT] == ["[BOS]"]
    assert traj.tokens[1] == "[p1.init]"
