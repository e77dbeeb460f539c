import random

from toolssm.protocol import ANS, EOS, Episode, Role
from toolssm.tools import ERR, SearchMemory
from toolssm.tools.search import END_FIND, END_OBS, FIND, NL, OBS

CODE = ["a", "=", "1", NL, "b", "=", "a", "+", "1", NL, "c", "=", "b", NL]


def ask(tool, *query):
    """Send one whole command; return the observation of its last token."""
    obs = []
    for t in (FIND, *query, END_FIND):
        assert tool.accepts(t)
        obs = tool.step(t)
    return obs


def test_find_returns_every_matching_line_in_memory_order_each_ended_by_a_newline():
    t = SearchMemory()
    assert t.reset(CODE) == []
    assert ask(t, "a") == [OBS, "a", "=", "1", NL, "b", "=", "a", "+", "1", NL, END_OBS]
    assert ask(t, "b", "=") == [OBS, "b", "=", "a", "+", "1", NL, END_OBS]
    assert ask(t, "=", "b") == [OBS, "c", "=", "b", NL, END_OBS]
    assert ask(t, "a", "=", "1") == [OBS, "a", "=", "1", NL, END_OBS]


def test_the_query_must_match_a_contiguous_run_and_a_line_is_listed_once():
    t = SearchMemory()
    t.reset(["x", "y", "x", "y", NL, "x", "z", "y", NL])
    assert ask(t, "x", "y") == [OBS, "x", "y", "x", "y", NL, END_OBS]  # two matches, one line
    assert ask(t, "y", "x", "z") == [OBS, END_OBS]  # runs never cross a line break
    assert ask(t, "q") == [OBS, END_OBS]  # a token never seen
    assert ask(t, "z", "q") == [OBS, END_OBS]


def test_thoughts_and_outputs_become_searchable_including_the_line_being_written():
    t = SearchMemory()
    t.reset(CODE)
    t.record("b")
    assert ask(t, "b") == [OBS, "b", "=", "a", "+", "1", NL, "c", "=", "b", NL, "b", NL, END_OBS]
    for tok in ["=", "2", NL, "done"]:
        t.record(tok)
    assert ask(t, "b", "=") == [OBS, "b", "=", "a", "+", "1", NL, "b", "=", "2", NL, END_OBS]
    assert ask(t, "done") == [OBS, "done", NL, END_OBS]
    assert t.memory == [*CODE, "b", "=", "2", NL, "done"]


def test_a_command_spans_tokens_and_is_answered_on_the_closing_token():
    t = SearchMemory()
    t.reset(CODE)
    assert not t.accepts("a") and not t.accepts(NL) and t.accepts(FIND) and t.accepts(END_FIND)
    assert t.step(FIND) == []
    assert t.accepts("a") and t.accepts("anything") and t.accepts(ANS)  # inside a query: every token
    assert t.step("c") == []
    assert t.step(END_FIND) == [OBS, "c", "=", "b", NL, END_OBS]
    assert not t.accepts("c")  # closed


def test_invalid_commands_return_an_error_and_never_raise():
    t = SearchMemory()
    t.reset(CODE)
    assert t.step(END_FIND) == [ERR]  # [/find] without [find]
    assert ask(t) == [ERR]  # empty query
    assert t.step("hello") == [ERR]  # not a command at all
    t.step(FIND)
    t.step("a")
    assert t.step(FIND) == [ERR]  # [find] inside a query: error, the query is dropped
    assert not t.accepts("a")
    t.step(FIND)
    assert t.step(NL) == [ERR]  # a newline inside a query could never match
    assert not t.accepts("a")
    assert ask(t, "c") == [OBS, "c", "=", "b", NL, END_OBS]  # still works after errors
    assert t.memory == CODE  # errors never touch memory


def test_episode_roles_commands_and_observations_stay_out_of_memory():
    ep = Episode(SearchMemory(), ["x", "=", "1", NL])
    ep.reset()
    roles = [ep.step(tok).role for tok in [FIND, "x", END_FIND]]
    assert roles == [Role.COMMAND] * 3
    assert ep.trajectory.tokens[-9:] == [FIND, "x", END_FIND, OBS, "x", "=", "1", NL, END_OBS]
    assert ep.trajectory.roles[-6:] == [Role.OBSERVATION] * 6
    assert ep.step("y").role == Role.THOUGHT
    assert ep.step(NL).role == Role.THOUGHT
    assert ep.step(ANS).role == Role.THOUGHT
    assert ep.step("y").role == Role.OUTPUT
    assert ep.step(EOS).terminated
    assert ep.tool.memory == ["x", "=", "1", NL, "y", NL, ANS, "y"]
    assert ep.output == ["y"]


def test_reset_clears_memory_and_any_open_query():
    t = SearchMemory()
    t.reset(CODE)
    t.step(FIND)
    t.record("zzz")
    t.reset(["q", NL])
    assert not t.accepts("q")
    assert ask(t, "a") == [OBS, END_OBS]
    assert ask(t, "q") == [OBS, "q", NL, END_OBS]


def test_the_index_agrees_with_a_brute_force_scan():
    rng = random.Random(0)
    alphabet = ["a", "b", "c", "d", NL]
    for _ in range(200):
        mem = [rng.choice(alphabet) for _ in range(rng.randint(0, 60))]
        t = SearchMemory()
        t.reset(mem[: len(mem) // 2])
        for tok in mem[len(mem) // 2 :]:
            t.record(tok)
        lines, cur = [], []
        for tok in mem:
            if tok == NL:
                lines.append(cur)
                cur = []
            else:
                cur.append(tok)
        lines.append(cur)
        q = [rng.choice("abcd") for _ in range(rng.randint(1, 3))]
        want = [OBS]
        for line in lines:
            if any(line[j : j + len(q)] == q for j in range(len(line) - len(q) + 1)):
                want += [*line, NL]
        want.append(END_OBS)
        assert ask(t, *q) == want, (mem, q)
