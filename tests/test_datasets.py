"""Trajectory datasets: records and chat messages of a trajectory, `toolssm data` files that datasets loads and the
task's tool replays, training from a file equal to online training, one-line errors for bad records, and the
mini-SWE-agent reader on v1, v2 text and v2 tool-call records."""

import json
import random

import pytest

from toolssm.cli import main
from toolssm.models import ModelConfig
from toolssm.protocol import EOS, Role, Trajectory
from toolssm.tasks import answered, get_task
from toolssm.tasks.codefix.trajectory import texts, to_trajectory
from toolssm.tokenizer import Bpe
from toolssm.tools.shell import BASH, END_BASH
from toolssm.train import TrainConfig, train


def test_a_record_round_trips_and_messages_keep_every_token():
    task = get_task("addition")
    problem = task.sample(random.Random(3), 4)
    traj = task.demonstrate(problem)
    rec = json.loads(json.dumps(traj.to_record(task.format(problem))))
    assert rec["problem"] == task.format(problem) and rec["roles"][0] == "input"
    back = Trajectory.from_record(rec)
    assert back.tokens == traj.tokens and back.roles == traj.roles
    msgs = traj.to_messages()
    assert msgs[0]["role"] == "user"
    calls = [m for m in msgs if m.get("tool_calls")]
    tools = [m for m in msgs if m["role"] == "tool"]
    assert calls and tools and len(tools) <= len(calls)
    n_cmd = sum(r == Role.COMMAND for r in traj.roles)
    assert sum(len(m["tool_calls"][0]["function"]["arguments"]["command"].split()) for m in calls) == n_cmd
    spoken = [m.get("content") or m.get("tool_calls")[0]["function"]["arguments"]["command"] for m in msgs]
    assert " ".join(spoken).split() == traj.tokens  # every token, in order, in exactly one message


@pytest.mark.parametrize(
    "record, needle",
    [
        ({"tokens": ["[BOS]"]}, "not a trajectory record"),
        ({"tokens": ["[BOS]", "1"], "roles": ["input"]}, "2 tokens but 1 roles"),
        ({"tokens": ["[BOS]"], "roles": ["speaker"]}, "unknown role 'speaker'"),
        ([1, 2], "not a trajectory record"),
    ],
)
def test_a_bad_record_is_refused(record, needle):
    with pytest.raises(ValueError, match=needle):
        Trajectory.from_record(record, "f.jsonl, line 3")


@pytest.mark.parametrize("task_name, size, n", [("addition", 6, 100), ("hanoi", 4, 20), ("logic-graph", 6, 20)])
def test_exported_trajectories_load_with_datasets_and_replay_through_the_tool(task_name, size, n, tmp_path):
    datasets = pytest.importorskip("datasets", reason="Hugging Face datasets is not installed (the datasets extra)")
    out = tmp_path / "d.jsonl"
    assert main(["data", "--task", task_name, "--size", str(size), "--n", str(n), "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    rows = datasets.load_dataset("json", data_files=str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert len(rows) == n
    task = get_task(task_name)
    for row in rows:
        problem = task.parse(row["problem"])
        traj = Trajectory.from_record(row)
        replayed = task.replay(problem, traj).trajectory
        assert replayed.tokens == traj.tokens and replayed.roles == traj.roles
        assert task.verify(problem, answered(traj.output())).correct and task.size(problem) == row["size"]


def test_parquet_writes_and_trains(tmp_path):
    pytest.importorskip("datasets", reason="Hugging Face datasets is not installed (the datasets extra)")
    out = tmp_path / "d.parquet"
    assert main(["data", "--n", "8", "--batch-size", "4", "--out", str(out), "--no-progress"]) == 0
    jsonl = tmp_path / "d.jsonl"
    assert main(["data", "--n", "8", "--batch-size", "4", "--out", str(jsonl), "--no-progress"]) == 0
    from toolssm.data import read_dataset

    a, b = read_dataset(out, get_task("addition")), read_dataset(jsonl, get_task("addition"))
    assert [t.tokens for t in a] == [t.tokens for t in b] and [t.roles for t in a] == [t.roles for t in b]


def _losses(run):
    return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("arch", ["lstm", "mamba"])
def test_training_on_an_exported_file_gives_the_online_loss_curve(arch, tmp_path):
    data = tmp_path / "train.jsonl"
    # 40 records: the 5 steps of 8 that online training draws with seed 7
    assert main(["data", "--task", "addition", "--size", "5", "--n", "40", "--seed", "7", "--batch-size", "8",
                 "--out", str(data), "--no-progress"]) == 0  # fmt: skip
    common = dict(task="addition", train_size=5, model=ModelConfig(arch=arch, d_model=16, n_layers=1), steps=5,
                  batch_size=8, warmup=1, seed=7, log_every=1, progress=False)  # fmt: skip
    train(TrainConfig(**common, out=str(tmp_path / "online")))
    train(TrainConfig(**common, data=str(data), out=str(tmp_path / "file")))
    online, stored = _losses(tmp_path / "online"), _losses(tmp_path / "file")
    assert len(online) == 5 and online == stored  # to the bit
    # another seed's file is another stream: the curve differs
    other = tmp_path / "other.jsonl"
    assert main(["data", "--n", "40", "--seed", "8", "--batch-size", "8", "--out", str(other), "--no-progress"]) == 0
    train(TrainConfig(**common, data=str(other), out=str(tmp_path / "other")))
    assert _losses(tmp_path / "other") != online


@pytest.mark.parametrize(
    "line, needle",
    [
        ("{oops", "line 2: not JSON"),
        ('{"tokens": ["[BOS]", "1"]}', "line 2: not a trajectory record"),
        ('{"tokens": ["[BOS]", "1"], "roles": ["input", "orator"]}', "line 2: unknown role 'orator'"),
        ('{"task": "hanoi", "tokens": ["[BOS]", "1"], "roles": ["input", "thought"]}', "line 2: a hanoi trajectory"),
        ('{"tokens": ["[BOS]", "@"], "roles": ["input", "thought"]}', "line 2: token '@' is not in task addition"),
        ('{"tokens": ["[BOS]", "1"], "roles": ["input", "input"]}', "line 2: no token to train on"),
    ],
)
def test_training_on_a_bad_file_is_a_one_line_error(line, needle, tmp_path, capsys):
    good = json.dumps(get_task("addition").demonstrate(get_task("addition").sample(random.Random(0), 3)).to_record())
    data = tmp_path / "bad.jsonl"
    data.write_text(f"{good}\n{line}\n")
    before = data.read_text()
    assert main(["train", "--data", str(data), "--steps", "1", "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("toolssm: error: ") and needle in err and err.count("\n") == 1, err
    assert data.read_text() == before and not (tmp_path / "run" / "checkpoint").exists()


def test_data_refuses_to_overwrite_and_bad_flags(tmp_path, capsys):
    out = tmp_path / "d.jsonl"
    out.write_text("mine\n")
    assert main(["data", "--n", "2", "--out", str(out), "--no-progress"]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_text() == "mine\n"
    assert main(["data", "--n", "2", "--out", str(tmp_path / "d.csv"), "--no-progress"]) == 2
    assert main(["data", "--task", "hanoi", "--size", "1000", "--out", str(tmp_path / "h.jsonl")]) == 2
    assert "bad --size 1000" in capsys.readouterr().err


# -- mini-SWE-agent records ------------------------------------------------------------------------------------

SYSTEM = {"role": "system", "content": "You are a helpful assistant that can interact with a computer."}
TASK = {"role": "user", "content": "Fix the bug in main.py."}


def record(fmt, *messages):
    """A submitted mini-SWE-agent record of ``trajectory_format`` fmt: the system and task messages, then these."""
    return {"trajectory_format": fmt, "info": {"exit_status": "Submitted"}, "messages": [SYSTEM, TASK, *messages]}


def _call(i, command):
    return {"id": f"call_{i}", "type": "function",
            "function": {"name": "bash", "arguments": json.dumps({"command": command})}}  # fmt: skip


# mini-swe-agent 1.x: ```bash blocks, submitting with MINI_SWE_AGENT_FINAL_OUTPUT
V1 = record(
    "mini-swe-agent-1",
    {"role": "assistant", "content": "THOUGHT: look first.\n\n```bash\ncat main.py\n```"},
    {"role": "user", "content": "<returncode>0</returncode>\n<output>\nprint(v10)\n</output>"},
    {"role": "assistant", "content": "THOUGHT: done.\n\n```bash\necho MINI_SWE_AGENT_FINAL_OUTPUT && git add -A && "
                                     "git diff --cached\n```"},
    {"role": "user", "content": "diff --git a/main.py b/main.py"},
)  # fmt: skip
# mini-swe-agent 2.x, text mode: ```mswea_bash_command blocks; an exit message at the end
V2_TEXT = record(
    "mini-swe-agent-1.1",
    {"role": "assistant", "content": "Let me run it.\n\n```mswea_bash_command\npython3 main.py\n```"},
    {"role": "user", "content": "<returncode>1</returncode>\nNameError: name 'v10' is not defined"},
    {"role": "assistant", "content": "```mswea_bash_command\necho COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\n```"},
    {"role": "exit", "content": "", "extra": {"exit_status": "Submitted"}},
)
# mini-swe-agent 2.x, tool-call mode: content None, the command in tool_calls, tool observations
V2_TOOLS = record(
    "mini-swe-agent-1.1",
    {"role": "assistant", "content": None, "tool_calls": [_call(1, "ls -la")]},
    {"role": "tool", "tool_call_id": "call_1", "content": "main.py foo.py"},
    {"role": "assistant", "content": "Fixing.", "tool_calls": [_call(2, "sed -i 's/a/b/' foo.py")]},
    {"role": "tool", "tool_call_id": "call_2", "content": ""},
    {"role": "assistant", "content": None, "tool_calls": [_call(3, "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT")]},
)
NO_ACTION = {"messages": [SYSTEM, TASK, {"role": "assistant", "content": "I would rather not."}]}
RECORDS = {"v1": V1, "v2-text": V2_TEXT, "v2-tool-calls": V2_TOOLS}


@pytest.fixture(scope="module")
def bpe():
    return Bpe.train([*texts(RECORDS.values()), "None"], 300)


def _commands(traj, bpe):
    out, cur = [], None
    for t, r in zip(traj.tokens, traj.roles):
        if t == BASH:
            cur = []
        elif t == END_BASH:
            out.append(bpe.decode(cur))
            cur = None
        elif cur is not None:
            cur.append(t)
    return out


@pytest.mark.parametrize("kind", list(RECORDS))
def test_mini_swe_agent_records_give_commands_and_end_in_eos(kind, bpe):
    traj = to_trajectory(RECORDS[kind], bpe)
    cmds = _commands(traj, bpe)
    want = {"v1": ["cat main.py"], "v2-text": ["python3 main.py"],
            "v2-tool-calls": ["ls -la", "sed -i 's/a/b/' foo.py"]}
    assert cmds == want[kind]  # the submit is not a command
    assert traj.tokens[-1] == EOS and traj.roles[-1] == Role.OUTPUT and traj.tokens.count(EOS) == 1
    text = bpe.decode([t for t, r in zip(traj.tokens, traj.roles) if r != Role.COMMAND and t != EOS])
    assert "None" not in text and "FINAL_OUTPUT" not in text


def test_a_record_with_no_action_is_a_one_line_error(bpe, tmp_path, capsys):
    with pytest.raises(ValueError, match="no action in any assistant message"):
        to_trajectory(NO_ACTION, bpe)
    data = tmp_path / "agent.jsonl"
    data.write_text(json.dumps(V1) + "\n" + json.dumps(NO_ACTION) + "\n")
    bpe.save(tmp_path)
    assert main(["train", "--task", "codefix", "--data", str(data), "--steps", "1", "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.startswith("toolssm: error: ") and "agent.jsonl, record 2: no action" in err and err.count("\n") == 1
