import random

import pytest

from toolssm.locality import window_conflict
from toolssm.protocol import ANS, EOS, Regime, Role
from toolssm.tasks import answered, get_task
from toolssm.tools import CALC, ERR, Calculator
from toolssm.tools.calculator import calculate

addition = get_task("addition")
ABLATIONS = ["addition-direct", "addition-reversed", "addition-notool", "addition-calculator"]


@pytest.mark.parametrize(
    "name, regime",
    [("addition", Regime.INTERACTIVE), ("addition-direct", Regime.COT_ONLY), ("addition-reversed", Regime.COT_ONLY),
     ("addition-notool", Regime.COT_ONLY), ("addition-calculator", Regime.SINGLE_TURN)],
)  # fmt: skip
def test_each_variant_is_in_its_regime(name, regime):
    task = get_task(name)
    for text in ["0+0", "57+68", "99999+1"]:
        assert task.demonstrate(task.parse(text)).regime() == regime


def test_direct_and_reversed_trajectories():
    p = addition.parse("57+68")
    direct = get_task("addition-direct").demonstrate(p)
    assert direct.tokens == ["[BOS]", *"57+68=", ANS, "1", "2", "5", EOS]
    reversed_ = get_task("addition-reversed").demonstrate(p)
    assert reversed_.tokens[-5:] == [ANS, "5", "2", "1", EOS]
    assert reversed_.output() == ["5", "2", "1"]
    for name in ("addition-direct", "addition-reversed"):  # no tool: the vocabulary has no tool tokens
        assert not any(t.startswith("[p") or t == CALC for t in get_task(name).vocab().tokens)


def test_notool_has_the_addition_experts_tokens_all_generated():
    p = addition.parse("4507+968")
    real = addition.demonstrate(p)
    notool = get_task("addition-notool").demonstrate(p)
    n_input = notool.roles.count(Role.INPUT)
    assert notool.tokens[:n_input] == ["[BOS]", *addition.input_tokens(p)]  # the ablation reads the input...
    assert notool.tokens[n_input:] == real.tokens[1:]  # ...then has the tool expert's tokens, all generated
    assert set(notool.roles[:n_input]) == {Role.INPUT}
    gen = notool.roles[n_input:]
    assert Role.COMMAND not in gen and Role.OBSERVATION not in gen
    assert all(m for m in notool.loss_mask()[n_input:])  # the model is trained to predict every read
    ans = notool.tokens.index(ANS)
    assert set(gen[: ans - n_input + 1]) == {Role.THOUGHT} and set(gen[ans - n_input + 1 :]) == {Role.OUTPUT}
    assert set(notool.tokens) <= set(get_task("addition-notool").vocab().tokens)


def test_calculator_trajectory():
    p = addition.parse("57+68")
    traj = get_task("addition-calculator").demonstrate(p)
    assert traj.tokens == ["[BOS]", *"57+68=", CALC, "1", "2", "5", ANS, "1", "2", "5", EOS]
    assert traj.roles[7:11] == [Role.COMMAND, Role.OBSERVATION, Role.OBSERVATION, Role.OBSERVATION]


def test_verifiers_reject_wrong_answers():
    p = addition.parse("57+68")
    direct, rev = get_task("addition-direct"), get_task("addition-reversed")
    assert direct.verify(p, answered(list("125"))).correct and not direct.verify(p, answered(list("521"))).correct
    assert rev.verify(p, answered(list("521"))).correct and not rev.verify(p, answered(list("125"))).correct
    for bad in ["", "52", "5210", "0521", "522"]:
        assert not rev.verify(p, answered(list(bad))).correct
    calc = get_task("addition-calculator")
    assert not calc.verify(p, answered(list("124"))).correct and not calc.verify(p, answered([ERR])).correct


def test_notool_verifier_grades_only_what_addition_would_output():
    notool = get_task("addition-notool")
    p = addition.parse("57+68")
    out = notool.demonstrate(p).output()
    assert notool.verify(p, answered(out)).correct
    # a hallucinated read result is not graded ([p3.read] 7 where memory holds 1), a wrong output digit is
    i = next(i for i in range(1, len(out) - 1) if out[i - 1 : i + 2] == ["[p3.read]", "1", "1"])
    assert notool.verify(p, answered(out[:i] + ["7"] + out[i + 1 :])).correct
    assert not notool.verify(p, answered(out[: i + 1] + ["7"] + out[i + 2 :])).correct
    assert not notool.verify(p, answered([t for t in out if t != "5"])).correct
    assert notool.verify(p, answered(list("125"))).correct  # a stream with no read-back at all is graded the same way


def test_calculator_tool():
    calc = Calculator()
    calc.reset(list("57+68="))
    assert calc.accepts(CALC) and not calc.accepts("5")
    assert calc.step(CALC) == list("125") == calc.step(CALC)  # stateless between calls
    calc.record("9")  # thoughts are not the calculator's memory
    assert calc.step(CALC) == list("125")
    assert calc.step("[p1.read]") == [ERR]
    for bad in ["57+=", "+68=", "5+6+7=", "57=", "", "5a+6="]:
        calc.reset(list(bad))
        assert calc.step(CALC) == [ERR]
    for text, want in [("1000-1=", "999"), ("1-1000", "-999"), ("12*34", "408"), ("0*5", "0"), ("007+1", "8")]:
        calc.reset(list(text))
        assert "".join(calc.step(CALC)) == want


def test_calculate_matches_python_ints():
    rng = random.Random(0)
    for _ in range(300):
        a, b = rng.randrange(10 ** rng.randint(1, 30)), rng.randrange(10 ** rng.randint(1, 30))
        assert calculate(str(a), "+", str(b)) == str(a + b)
        assert calculate(str(a), "-", str(b)) == str(a - b)
        assert calculate(str(a), "*", str(b)) == str(a * b)


@pytest.mark.parametrize("name", ABLATIONS)
def test_all_tasks_share_additions_problems(name):
    task = get_task(name)
    r1, r2 = random.Random(3), random.Random(3)
    assert [task.sample(r1, 5) for _ in range(20)] == [addition.sample(r2, 5) for _ in range(20)]


def test_no_tool_ablations_are_not_local():
    """What a tool would answer must now be predicted from far back: no short window decides it."""
    task = get_task("addition-notool")
    rng = random.Random(0)
    trajs = [task.demonstrate(task.sample(rng, 5)) for _ in range(300)]
    assert window_conflict(trajs, 12) is not None
