"""Code fixing: the generator, the verifier, the two hard-coded agents, trajectories (JSONL, mini-SWE-agent
import, tokens), and training plus evaluation through the real sandbox."""

import ast
import itertools
import json
import random
import re

import pytest

from toolssm.protocol import EOS, Role
from toolssm.tasks import answered, get_task
from toolssm.tasks.codefix.agents import SUBMIT, make_agent
from toolssm.tasks.codefix.codebase import BUG, ROOT, TARGET, generate
from toolssm.tasks.codefix.trajectory import (
    ENV,
    collect,
    paper_filter,
    read_records,
    run_agent,
    texts,
    to_trajectory,
    write_jsonl,
)  # fmt: skip
from toolssm.tasks.codefix.verify import (
    LIMITS,
    check_threading,
    touched_elsewhere,
    verify,
)
from toolssm.tokenizer import Bpe
from toolssm.tools import shell
from toolssm.tools.base import ERR
from toolssm.tools.shell import BASH, END_BASH, ShellSandbox, ShellTool

REASON = shell.sandbox_error()
needs_bwrap = pytest.mark.skipif(REASON is not None, reason=f"no sandbox: {REASON}")


@pytest.mark.parametrize("n,seed", [(2, 0), (4, 1), (9, 2), (16, 3), (64, 4), (300, 5)])
def test_the_generator_builds_a_dag_of_files_rooted_at_main_ending_in_foo(n, seed):
    cb = generate(random.Random(seed), n)
    names = [f.name for f in cb.functions]
    assert len(set(names)) == n and names[0] == ROOT and names[-1] == TARGET
    assert all(re.fullmatch(r"f(0|[1-9]\d{0,2})", x) for x in names[1:-1])
    files = cb.files()
    assert sorted(files) == sorted(f"{x}.py" for x in names)
    order = {x: i for i, x in enumerate(names)}
    reached = {ROOT}
    for f in cb.functions:
        tree = ast.parse(files[f.file])
        imported = [a.name for node in tree.body if isinstance(node, ast.ImportFrom) for a in node.names]
        assert imported == [c for c, _ in f.calls]
        for c, args in f.calls:
            assert order[c] > order[f.name]  # edges point to later nodes: a DAG
            assert len(args) == len(cb.by_name[c].params) >= 1
            if f.name in reached:
                reached.add(c)
        assert set(f.params) <= {f"v{i}" for i in range(10)}
        uses_bug = BUG in files[f.file]
        assert uses_bug == (f.name in (ROOT, TARGET))
    assert reached == set(names)  # every function is reachable from main
    assert TARGET in cb.on_path and ROOT in cb.on_path


def test_bad_sizes_are_one_line_errors():
    for n in (0, 1, 1001):
        with pytest.raises(ValueError, match="bad codebase size"):
            generate(random.Random(0), n)
    with pytest.raises(ValueError, match="bad codebase"):
        get_task("codefix").parse("many")


@pytest.mark.parametrize("seed", range(4))
def test_the_reference_fix_touches_exactly_the_paths_to_foo(seed):
    cb = generate(random.Random(seed), 12)
    before, after = cb.files(), cb.fixed().files()
    changed = {f for f in before if before[f] != after[f]}
    assert changed == {f"{x}.py" for x in cb.on_path}
    assert check_threading(cb, after) == [] and len(check_threading(cb, before)) > 0
    assert touched_elsewhere(cb, after) == []


@needs_bwrap
@pytest.mark.parametrize("seed", range(3))
def test_the_verifier_accepts_the_fix_and_rejects_wrong_ones(seed):
    cb = generate(random.Random(seed), 10)
    fixed = cb.fixed().files()
    v = verify(cb, fixed)
    assert v.fixed and v.clean and v.runs
    assert not verify(cb, cb.files()).fixed  # the bug itself: NameError
    # a partial fix: one function on a path is left as it was
    mid = sorted(cb.on_path - {ROOT, TARGET}) or [ROOT]
    partial = {**fixed, f"{mid[0]}.py": cb.files()[f"{mid[0]}.py"]}
    v = verify(cb, partial)
    assert not v.fixed and not v.runs and v.problems
    # foo makes up its own v10 instead of receiving it: it may even run, but v10 is not threaded
    foo = cb.by_name[TARGET]
    cheat = dict(cb.files())
    cheat["foo.py"] = cheat["foo.py"].replace(
        "    print(", f"    {BUG} = {dict(cb.functions[0].locals)[BUG]}\n    print(", 1
    )
    v = verify(cb, cheat)
    assert not v.fixed and not v.threaded and any("assigns" in p or "take" in p for p in v.problems)
    # the wrong variable passed in v10's slot: foo prints the wrong value
    caller = next(f for f in cb.functions if any(c == TARGET for c, _ in f.calls))
    wrong = dict(fixed)
    src = wrong[caller.file]
    wrong[caller.file] = re.sub(
        rf"{TARGET}\((.*), {BUG}\)",
        lambda m: f"{TARGET}({m.group(1)}, {foo.params[0]})",
        src,
    )
    assert wrong[caller.file] != src
    assert not verify(cb, wrong).fixed


@needs_bwrap
def test_the_verifier_reports_other_functions_touched():
    cb = next(c for s in range(50) if len((c := generate(random.Random(s), 10)).on_path) < 10)
    off = next(f for f in cb.functions if f.name not in cb.on_path)
    files = cb.fixed().files()
    files[off.file] = files[off.file].replace("    print(", "    pass\n    print(", 1)
    files["extra.py"] = "x = 1\n"
    v = verify(cb, files)
    assert v.fixed and not v.clean
    assert v.other_touched == (off.name, "added extra.py")
    assert verify(cb, {**files, off.file: files[off.file] + "\n\n"}).other_touched == (
        off.name,
        "added extra.py",
    )


def _drive(cb, agent):
    with ShellSandbox(cb.files(), env=ENV, limits=LIMITS) as sh:
        policy, obs = make_agent(agent), None
        for _ in range(8 * cb.n + 16):
            cmd = policy(obs)
            if cmd == SUBMIT:
                return verify(cb, sh.files())
            obs = sh.run(cmd).observation()
    raise AssertionError(f"{agent} did not submit")


@needs_bwrap
@pytest.mark.parametrize("n", [4, 6, 9, 13, 16, 24, 32, 48, 64])
def test_the_interactive_agent_fixes_every_codebase_cleanly(n):
    v = _drive(generate(random.Random(f"agents:{n}"), n), "interactive")
    assert v.fixed and v.clean, v


@needs_bwrap
@pytest.mark.parametrize("n", range(4, 65, 4))
def test_the_single_turn_agent_fixes_every_codebase_cleanly(n):
    v = _drive(generate(random.Random(f"agents:{n}"), n), "single-turn")
    assert v.fixed and v.clean, v


def test_unknown_agent_is_a_one_line_error():
    with pytest.raises(ValueError, match="unknown agent"):
        make_agent("psychic")


# -- trajectories, tokens, the token-level tool ---------------------------------------------------------
@pytest.fixture(scope="module")
def records():
    if REASON is not None:
        pytest.skip(f"no sandbox: {REASON}")
    return {a: collect(a, range(4, 7), 3, seed=7) for a in ("interactive", "single-turn")}


@pytest.fixture(scope="module")
def bpe(records):
    return Bpe.train(texts([r for rs in records.values() for r in rs]), 400)


def test_records_are_mini_swe_agent_messages_and_survive_jsonl(records, tmp_path):
    for agent, rs in records.items():
        for r in rs:
            assert r["trajectory_format"] == "mini-swe-agent-1" and r["info"]["exit_status"] == "Submitted"
            assert r["info"]["codefix"]["fixed"] and r["info"]["codefix"]["agent"] == agent
            roles = [m["role"] for m in r["messages"]]
            assert roles[:2] == ["system", "user"] and roles[-1] == "assistant"
            assert all(a != b for a, b in itertools.pairwise(roles[2:]))  # assistant and user alternate
            assert r["messages"][-1]["content"] == f"```bash\n{SUBMIT}\n```"
    path = write_jsonl(tmp_path / "t.jsonl", records["interactive"])
    assert read_records(path) == records["interactive"]
    single_cmds = [m for m in records["single-turn"][0]["messages"] if m["role"] == "assistant"]
    assert len(single_cmds) == 3  # print everything, edit everything, submit


@pytest.mark.parametrize("task_name", ["codefix", "codefix-single"])
def test_the_live_episode_and_the_stored_record_give_the_same_tokens(bpe, task_name):
    task = get_task(task_name)
    task.bpe = bpe
    cb = generate(random.Random(3), 6)
    live = task.demonstrate(cb)
    stored = to_trajectory(run_agent(cb, task.agent), bpe)
    assert live.tokens == stored.tokens and live.roles == stored.roles
    assert live.tokens[-1] == EOS and Role.OBSERVATION in live.roles
    n_cmd = live.tokens.count(BASH)
    assert (n_cmd == 2) == (task_name == "codefix-single")
    assert len(live) <= task.token_budget(cb) / 1.5
    vocab = task.vocab()
    assert all(t in vocab for t in live.tokens)


def test_a_mini_swe_agent_traj_json_imports_with_thoughts_and_submit(bpe, tmp_path):
    rec = {
        "info": {"exit_status": "Submitted", "submission": "diff"},
        "messages": [
            {"role": "system", "content": "sys"}, {"role": "user", "content": "fix v10"},
            {"role": "assistant", "content": "THOUGHT: look first\n\n```bash\ncat main.py\n```"},
            {"role": "user", "content": "<returncode>0</returncode>\n<output>\nx\n</output>"},
            {"role": "assistant", "content": "THOUGHT: done\n\n```bash\necho COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\n```"},
        ],
        "trajectory_format": "mini-swe-agent-1.1",
    }  # fmt: skip
    (tmp_path / "run" / "i1").mkdir(parents=True)
    (tmp_path / "run" / "i1" / "i1.traj.json").write_text(json.dumps(rec))
    [got] = read_records(tmp_path / "run")
    traj = to_trajectory(got, bpe)
    text = {
        r: bpe.decode([t for t, q in zip(traj.tokens, traj.roles) if q == r and not t.startswith("[")]) for r in Role
    }
    assert text[Role.INPUT] == "sys\nfix v10"
    assert text[Role.THOUGHT] == "THOUGHT: look first\n\nTHOUGHT: done\n\n"
    assert text[Role.COMMAND] == "cat main.py"
    assert traj.tokens[-1] == EOS and traj.tokens.count(BASH) == 1
    with pytest.raises(ValueError, match="not a mini-SWE-agent trajectory"):
        (tmp_path / "bad.jsonl").write_text('{"x": 1}\n')
        read_records(tmp_path / "bad.jsonl")


def test_the_paper_filter_keeps_fixed_trajectories_shorter_than_the_average(records):
    rs = [r for r in records["interactive"]]
    broken = json.loads(json.dumps(rs[0]))
    broken["info"]["codefix"]["fixed"] = False
    kept = paper_filter([*rs, broken])
    assert broken not in kept and kept
    for r in kept:
        n = r["info"]["codefix"]["n"]
        same = [len(x["messages"]) for x in rs if x["info"]["codefix"]["n"] == n]
        assert len(r["messages"]) <= sum(same) / len(same)


def test_the_shell_tool_speaks_bash_blocks_and_answers_err(bpe):
    tool = ShellTool(bpe, {"main.py": "print(6 * 7)\n"})
    tool.reset([])
    try:
        assert tool.step(END_BASH) == [ERR] and not tool.accepts("x")
        assert tool.accepts(BASH) and tool.step(BASH) == []
        assert tool.accepts("anything")
        assert tool.step(BASH) == [ERR]  # [bash] inside a command
        tool.step(BASH)
        for p in bpe.encode("python3 main.py"):
            assert tool.step(p) == []
        obs = bpe.decode(tool.step(END_BASH))
        assert obs == "<returncode>0</returncode>\n<stdout>\n42\n</stdout>\n"
        workspace = tool.sandbox.workspace
    finally:
        tool.close()
    assert not workspace.exists()


def test_train_from_records_saves_the_tokenizer_and_evaluates_through_the_sandbox(records, bpe, tmp_path):
    from toolssm.checkpoint import load_trained
    from toolssm.evaluate import evaluate
    from toolssm.models import ModelConfig
    from toolssm.train import TrainConfig, train

    data = tmp_path / "data"
    write_jsonl(data / "interactive.jsonl", records["interactive"])
    bpe.save(data)
    cfg = TrainConfig(
        task="codefix", data=str(data / "interactive.jsonl"), model=ModelConfig(arch="lstm", d_model=16, n_layers=1),
        steps=2, batch_size=2, warmup=1, out=str(tmp_path / "run"), progress=False, max_len=300,
    )  # fmt: skip
    ckpt = train(cfg)
    assert (ckpt / "tokenizer.json").read_text() == bpe.to_str()
    loaded, task = load_trained(ckpt)  # the task with the checkpoint's tokenizer
    assert task.bpe.to_str() == bpe.to_str() and task.vocab() == loaded.vocab
    [res] = evaluate(loaded.model, task, loaded.vocab, ["4"], n_problems=1, progress=False)  # addition's evaluate
    assert res.n == 1 and 0 <= res.answer_acc <= 1 and res.tokens_per_problem > 0
    with pytest.raises(ValueError, match="takes no --data"):
        train(
            TrainConfig(
                task="addition",
                data=str(data / "interactive.jsonl"),
                out=str(tmp_path / "x"),
                progress=False,
            )
        )


def test_eval_and_solve_decode_a_codefix_checkpoint_with_its_own_tokenizer(records, bpe, tmp_path, capsys):
    """toolssm eval and solve load the task's tokenizer from the checkpoint and grade the workspace (they used to
    stop at 'needs a BPE tokenizer', and Codefix.verify raised)."""
    from toolssm.cli import main

    data = tmp_path / "data"
    write_jsonl(data / "interactive.jsonl", records["interactive"])
    bpe.save(data)
    run = tmp_path / "run"
    assert main(["train", "--task", "codefix", "--data", str(data / "interactive.jsonl"), "--model", "lstm",
                 "--model.d-model", "16", "--model.n-layers", "1", "--steps", "2", "--batch-size", "2", "--warmup", "1",
                 "--max-len", "300", "--train-size", "6", "--out", str(run), "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), "--lengths", "4", "--n-problems", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "evaluating lstm on codefix (trained to size 6" in out and "answer EM" in out
    assert main(["solve", "--checkpoint", str(run), "4:2", "--max-tokens", "40"]) == 0
    out = capsys.readouterr().out
    assert "answer: not fixed: " in out and "WRONG, expected v10 threaded" in out  # an untrained model


@needs_bwrap
def test_codefix_is_graded_on_the_workspace_of_the_finished_episode(bpe):
    task = get_task("codefix")
    task.bpe = bpe
    cb = generate(random.Random(11), 6)
    traj = task.demonstrate(cb)
    with task.replay(cb, traj) as ep:  # the expert's commands, run again: the workspace is fixed
        v = task.verify(cb, ep)
        workspace = ep.tool.sandbox.workspace
        assert v.correct and v.fixed and v.clean and v.got.startswith("fixed"), v
    assert not workspace.exists()  # the episode closed its sandbox
    with task.episode(cb) as ep:  # no command at all: the bug is still there
        ep.reset()
        ep.step(EOS)
        v = task.verify(cb, ep)
    assert not v.correct and not v.fixed and v.got.startswith("not fixed") and "v10" in v.expected
    with pytest.raises(ValueError, match="graded on the workspace"):
        task.verify(cb, answered([]))


def test_bad_training_data_is_named_in_one_line(records, bpe, tmp_path):
    task = get_task("codefix")
    bpe.save(tmp_path)
    good = json.dumps(records["interactive"][0])
    cases = [
        ("missing.jsonl", None, "no trajectories at .*missing.jsonl: the path does not exist"),
        ("notjson.jsonl", f"{good}\n{{oops\n", "notjson.jsonl, line 2: not JSON"),
        ("norole.jsonl", '{"messages": [{"content": "hi"}]}\n', "norole.jsonl, line 1: not a mini-SWE-agent"),
        ("empty.jsonl", '{"messages": [{"role": "user"}]}\n', "empty.jsonl, record 1: no action"),  # issue 24
    ]
    for name, text, needle in cases:
        if text is not None:
            (tmp_path / name).write_text(text)
        task.bpe = None
        with pytest.raises(ValueError, match=needle):
            task.load_data(tmp_path / name)


@pytest.mark.parametrize("agent,task_name", [("interactive", "codefix"), ("single-turn", "codefix-single")])
def test_analyze_data_predicts_the_counted_kgram_row_on_stored_codefix_trajectories(records, bpe, tmp_path, agent,
                                                                                    task_name, capsys):  # fmt: skip
    """`analyze --data`: the stored trajectories, tokenized with the tokenizer beside them as `train --data`
    does, are the training sample; the test sizes are run by the task's agent in the sandbox. The predicted
    trajectory match is the one the k-gram learner counted on the same file measures."""
    from toolssm.analysis import analyze
    from toolssm.cli import main
    from toolssm.data import load_stored
    from toolssm.evaluate import evaluate
    from toolssm.models import ModelConfig
    from toolssm.train import TrainConfig, fit

    data = tmp_path / "data"
    path = write_jsonl(data / f"{agent}.jsonl", records[agent])
    bpe.save(data)
    task = get_task(task_name)
    task.bpe = None
    a = analyze(task, 6, ["4", "6"], steps=2, batch_size=4, n_problems=2, data=load_stored(task, path), max_k=32)
    assert task.bpe.to_str() == bpe.to_str() and a.stored == 3 and a.n_train == 8
    assert all(r.n == 2 and r.tokens_per_problem > 100 and r.unseen + r.wrong > 0 for r in a.sizes)
    cfg = TrainConfig(task=task_name, data=str(path), train_size=6, model=ModelConfig(arch="kgram", window=a.k),
                      steps=2, batch_size=4, out=str(tmp_path / "run"), progress=False)  # fmt: skip
    _, model = fit(cfg)
    measured = evaluate(model, task, task.vocab(), ["4", "6"], n_problems=2, with_token_acc=False, progress=False)
    assert [r.trajectory_acc for r in measured] == [r.exact for r in a.sizes]
    if task_name == "codefix":
        return  # the command line once, on the shorter single-turn trajectories
    assert main(["analyze", "--task", task_name, "--data", str(path), "--train-size", "6", "--sizes", "4",
                 "--steps", "2", "--batch-size", "4", "--n-problems", "1", "--no-progress"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "trained on 8 draws from 3 stored trajectories" in out and "predicted (k-gram learner): 6→" in out
