"""Oolong-style aggregation with the retrieval tool: expert replay, the verifier, the tool, the local policy."""

import random
from collections import Counter

import pytest

from toolssm.locality import policy_window, window_conflict
from toolssm.protocol import ANS, EOS, Role, Trajectory
from toolssm.tasks import answered, get_task
from toolssm.tasks.oolong import (
    MAX_N,
    TOPICS,
    WIDTH,
    OolongProblem,
    answer,
    classify,
    random_problem,
    read_tally,
    tally_line,
)
from toolssm.tools import ERR
from toolssm.tools.retrieval import CTX, END, END_EX, NEXT, RetrievalTool

task = get_task("oolong")


@pytest.mark.parametrize("n, seed", [(1, 0), (5, 1), (10, 2), (25, 3), (100, 4), (1000, 5)])
def test_expert_replay_reproduces_every_observation_and_the_answer(n, seed):
    problem = task.sample_eval(random.Random(seed), str(n))
    traj = task.demonstrate(problem)
    ep = task.replay(problem, traj)
    assert ep.terminated
    assert ep.trajectory.tokens == traj.tokens and ep.trajectory.roles == traj.roles
    assert task.verify(problem, answered(traj.output())).correct
    assert len(task.vocab().ids(traj.tokens)) == len(traj)
    # one [next] per example plus the one that returns [end]; one topic thought per example
    assert sum(r == Role.COMMAND for r in traj.roles) == n + 1
    assert traj.tokens.count(END) == 1


def test_the_answer_is_the_count_or_the_most_frequent_topic_by_simulation():
    rng = random.Random(0)
    for _ in range(300):
        p = task.sample(rng, 5)
        topics = Counter(classify(ex) for ex in p.examples)
        counts = [p.start[i] + topics[t] for i, t in enumerate(TOPICS)]
        kind, topic = p.question
        if kind == "count":
            assert answer(p) == list(str(counts[TOPICS.index(topic)]))
        else:
            best = max(counts)
            assert answer(p) == [next(t for t, c in zip(TOPICS, counts) if c == best)]  # ties: the first topic
        assert task.demonstrate(p).output() == answer(p)


def test_verifier_rejects_wrong_answers():
    p = OolongProblem(("count", "music"), (0,) * 6, (("is", "the", "band", "good", "?"), ("why", "team", "?"),
                                                     ("what", "song", "?")))  # fmt: skip
    assert task.verify(p, answered(["2"])).correct
    for bad in (["3"], ["0", "2"], ["music"], [], ["2", "2"]):
        assert not task.verify(p, answered(bad)).correct
    m = OolongProblem(("most", None), (0,) * 6, p.examples)
    assert task.verify(m, answered(["music"])).correct and not task.verify(m, answered(["sports"])).correct
    tie = OolongProblem(("most", None), (0,) * 6, (("why", "team", "?"), ("what", "song", "?")))
    assert task.verify(tie, answered(["sports"])).correct and not task.verify(tie, answered(["music"])).correct  # TOPICS order


def test_training_starts_from_random_tallies_so_every_digit_is_seen_and_evaluation_from_zero():
    rng = random.Random(0)
    train = [task.sample(rng, 5) for _ in range(400)]
    assert max(task.size(p) for p in train) == 5 and min(task.size(p) for p in train) == 1
    digits = Counter()
    for p in train:
        for line in task.demonstrate(p).tokens:
            digits[line] += 1
    assert all(digits[str(d)] > 0 for d in range(10))
    assert sum(any(p.start) for p in train) > 100  # about half start from a tally
    assert all(not any(task.sample_eval(rng, "7").start) for _ in range(20))
    zero = get_task("oolong-zero")
    assert all(not any(zero.sample(rng, 5).start) for _ in range(100))
    # with a zero start and at most 5 examples no counter is ever written above 5: the reason for the start
    seen = {t for p in (zero.sample(rng, 5) for _ in range(200)) for t in zero.demonstrate(p).tokens}
    assert not seen & {"6", "7", "8", "9"}


def test_a_counter_carries_across_every_digit():
    p = OolongProblem(("count", "health"), (0, 0, 9999 - 2, 0, 0, 0), (("why", "pain", "?"), ("is", "diet", "?")))
    assert task.demonstrate(p).output() == list("9999")
    q = OolongProblem(("count", "health"), (0, 0, 999, 0, 0, 0), (("why", "pain", "?"),))
    traj = task.demonstrate(q)
    assert traj.output() == list("1000")
    lines = " ".join(traj.tokens).split(" [NL] ")
    assert lines[0] == "[BOS] count health 0 9 9 9" and "count health 1 0 0 0" in lines


def test_tally_lines_have_a_fixed_length_and_read_back():
    counts = [9999, 12, 0, 7, 100, 1]
    most = tally_line(("most", None), counts)
    assert len(most) == len(tally_line(("most", None), [0] * 6)) == 1 + 6 * (WIDTH + 1) + 1
    assert read_tally(most) == dict(zip(TOPICS, counts))
    count = tally_line(("count", "music"), counts)  # a count question keeps the counter it needs, alone
    assert count == ["count", "music", "0", "0", "1", "2", "[NL]"]
    assert read_tally(count) == {"music": 12}


def test_expert_policy_is_local_and_its_window_does_not_grow_with_n():
    """The smallest k for which the next generated token is a function of the last k tokens, measured on
    training-sized problems, is enough at 100 and 1,000 examples too: nothing is counted in the model's head,
    the tally is written out. A policy that counted would conflict (see the negative control below)."""
    rng = random.Random(0)
    # the hard case for a lookup table: the same example over and over, so that only the written tally tells the
    # steps apart (random examples make almost every window unique, which would hide a short memory)
    def same(n):
        return [task.demonstrate(OolongProblem(q, (0,) * 6, (("why", "team", "?"),) * n))
                for q in (("count", "sports"), ("count", "music"), ("most", None))]  # fmt: skip

    small = [task.demonstrate(task.sample(rng, 5)) for _ in range(300)] + [t for n in range(1, 6) for t in same(n)]
    k = policy_window(small, max_k=128)
    assert k <= 6 * (WIDTH + 1) + 20  # about a tally line and an example
    large = [task.demonstrate(task.sample_eval(rng, str(n))) for n in (25, 100, 1000)] + same(12) + same(150)
    assert window_conflict(small + large, k) is None
    repeated = [t for n in (1, 2, 3, 4, 5, 12, 150) for t in same(n)]

    def untallied(traj):  # negative control: the same trajectories with the tally lines dropped
        out, skip = Trajectory(), False
        for t, r in zip(traj.tokens, traj.roles):
            skip = skip or (r == Role.THOUGHT and t in ("count", "most"))
            if not skip:
                out.append(t, r)
            skip = skip and t != "[NL]"
        return out

    assert window_conflict([untallied(t) for t in repeated], k) is not None  # the answer needs a count
    assert window_conflict([untallied(t) for t in repeated], 1000) is not None  # of any length


def test_the_question_and_tally_are_repeated_so_the_answer_is_within_one_line():
    p = task.sample_eval(random.Random(7), "300")
    toks = task.demonstrate(p).tokens
    i = toks.index(ANS)
    assert toks[-1] == EOS and toks[i - 2 : i] == [NEXT, END]
    last_line_start = max(j for j in range(i - 3) if toks[j] == "[NL]" and j < i - 3)
    assert i - last_line_start <= 6 * (WIDTH + 1) + 6


def test_retrieval_tool_edge_cases():
    tool = RetrievalTool()
    head = tool.reset(["count", "music", "[NL]", CTX, "a", "?", END_EX, "b", END_EX, "c"])
    assert head == ["count", "music", "[NL]"]
    assert tool.accepts(NEXT) and not tool.accepts(END) and not tool.accepts("a")
    assert tool.step("a") == [ERR]  # not a command: nothing moves
    assert tool.step(NEXT) == ["a", "?", END_EX]
    assert tool.step(NEXT) == ["b", END_EX]
    assert tool.step(NEXT) == ["c", END_EX]  # an unclosed last example is still one
    assert tool.step(NEXT) == [END] and tool.step(NEXT) == [END]  # and stays at the end
    assert tool.reset(["x", "y"]) == ["x", "y"] and tool.step(NEXT) == [END]  # no [ctx]: all header
    assert tool.reset([CTX]) == [] and tool.step(NEXT) == [END]
    assert tool.reset([CTX, END_EX, "a", END_EX]) == [] and tool.step(NEXT) == [END_EX]  # an empty example
    tool.reset([CTX, "a", END_EX])
    assert tool.step(NEXT) == ["a", END_EX]
    tool.reset([CTX, "b", END_EX])  # reset starts over
    assert tool.step(NEXT) == ["b", END_EX]


def test_the_model_sees_only_the_header_until_it_asks():
    p = task.sample_eval(random.Random(1), "4")
    ep = task.episode(p, record=True)
    first = ep.reset()
    assert first == ["[BOS]", *tally_line(p.question, p.start)]
    assert not set(first) & {w for ex in p.examples for w in ex} - set(TOPICS) - {"?"}


def test_parse_round_trips_and_rejects_bad_input():
    p = random_problem(random.Random(3), 6)
    assert task.parse(task.format(p)) == p
    for bad, msg in [("", "question line"), ("count", "bad question"), ("count cats\nwhy team ?", "bad question"),
                     ("most", "no examples"), ("most\nwhy team zebra ?", "unknown word 'zebra'"),
                     ("most\nwhy the ?", "0 topics"), ("most\nwhy team song ?", "2 topics")]:  # fmt: skip
        with pytest.raises(ValueError, match=msg):
            task.parse(bad)


@pytest.mark.parametrize("spec", ["0", str(MAX_N + 1), "x"])
def test_bad_sizes_are_one_line_errors(spec):
    with pytest.raises(ValueError, match=r"^bad size .* for task oolong: [^\n]+$"):
        task.spec_size(spec)
