import pytest

from toolssm.protocol import ANS, BOS, EOS, PAD, Episode, Regime, Role, Trajectory, Vocab
from toolssm.tools import PointerMemory


def test_vocab_roundtrip_and_pad_first():
    v = Vocab.build(["a", "b"], ["[x]", "a"])
    assert v.tokens[:4] == [PAD, BOS, EOS, ANS]
    assert v.tokens[4:] == ["a", "b", "[x]"]  # duplicates dropped
    assert v.ids(["a", "[x]"]) == [4, 6]
    assert Vocab.from_json(v.to_json()) == v
    with pytest.raises(KeyError):
        v.id("zzz")
    with pytest.raises(ValueError):
        Vocab(["a", PAD])


def test_loss_mask_trains_on_thought_command_output_only():
    t = Trajectory()
    t.extend(["[BOS]", "1", "+", "2", "="], Role.INPUT)
    t.append("[p1.read]", Role.COMMAND)
    t.append("1", Role.OBSERVATION)
    t.append("3", Role.THOUGHT)
    t.append(ANS, Role.THOUGHT)
    t.append("3", Role.OUTPUT)
    t.append(EOS, Role.OUTPUT)
    assert t.loss_mask() == [False] * 5 + [True, False, True, True, True, True]
    assert t.output() == ["3"]


def _traj(*roles):
    t = Trajectory()
    for r in roles:
        t.append("x", r)
    return t


@pytest.mark.parametrize(
    "roles, regime",
    [
        ((Role.INPUT, Role.THOUGHT, Role.OUTPUT), Regime.COT_ONLY),
        ((Role.INPUT, Role.OUTPUT), Regime.COT_ONLY),
        ((Role.INPUT, Role.COMMAND, Role.OBSERVATION, Role.THOUGHT, Role.OUTPUT), Regime.SINGLE_TURN),
        ((Role.INPUT, Role.COMMAND, Role.OBSERVATION, Role.COMMAND, Role.OBSERVATION, Role.OUTPUT), Regime.INTERACTIVE),
        ((Role.INPUT, Role.OUTPUT, Role.COMMAND, Role.OBSERVATION, Role.OUTPUT), Regime.INTERACTIVE),
    ],
)
def test_the_three_regimes_are_expressible(roles, regime):
    assert _traj(*roles).regime() == regime


def test_episode_assigns_roles_and_keeps_terminated_apart_from_truncated():
    ep = Episode(PointerMemory(1), ["7"], max_tokens=100)
    assert ep.reset() == [BOS, "7"]
    assert ep.step("[p1.init]").role == Role.COMMAND
    st = ep.step("[p1.read]")
    assert (st.role, st.observation) == (Role.COMMAND, ["7"])
    assert ep.step("5").role == Role.THOUGHT
    assert ep.step(ANS).role == Role.THOUGHT
    assert ep.step("8").role == Role.OUTPUT
    st = ep.step(EOS)
    assert st.terminated and not st.truncated
    assert ep.output == ["8"]
    assert ep.trajectory.tokens == [BOS, "7", "[p1.init]", "[p1.read]", "7", "5", ANS, "8", EOS]
    assert ep.tool.memory == ["7", "5", ANS, "8"]  # commands and observations never enter memory
    with pytest.raises(RuntimeError):
        ep.step("1")

    ep = Episode(PointerMemory(1), ["7"], max_tokens=3, record=False)
    ep.reset()
    results = [ep.step("1") for _ in range(3)]
    assert [r.truncated for r in results] == [False, False, True]
    assert not results[-1].terminated
    assert ep.trajectory is None


def test_the_input_can_live_in_the_tool_alone():
    ep = Episode(PointerMemory(1), ["4", "2"], show_input=False)
    assert ep.reset() == [BOS]  # the model starts from [BOS] alone
    assert ep.tool.memory == ["4", "2"]  # ...while the tool holds the input
    ep.step("[p1.init]")
    assert ep.step("[p1.read]").observation == ["4"]
    assert ep.trajectory.tokens[:1] == [BOS] and ep.trajectory.roles[0] == Role.INPUT
