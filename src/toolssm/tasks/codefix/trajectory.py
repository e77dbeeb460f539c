"""Trajectories as mini-SWE-agent messages, stored as JSONL, and their tokens for training.

A record (one JSONL line) has mini-SWE-agent's ``.traj.json`` layout (``trajectory_format``
``mini-swe-agent-1``): ``{"info": {...}, "messages": [{"role", "content"}, ...], "trajectory_format"}``.

- messages: ``system``, ``user`` (the task), then alternating ``assistant`` (optional thought text, then
  one ```` ```bash ```` block) and ``user`` (the observation); the last assistant message submits with
  ``echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT``.
- ``info``: ``exit_status``, ``submission`` (empty: the workspace is the submission), and ``codefix``:
  ``n``, ``seed``, ``agent``, ``fixed``, ``clean``, and the original ``files``, so a record can be
  re-verified and replayed.

`read_records` also reads a real mini-SWE-agent ``.traj.json`` (one record), which is how trajectories
distilled from an LLM agent come in (docs/tasks/codefix.md). `to_trajectory` turns any record into
protocol tokens with roles: the system and task messages are input, each assistant message is thought
pieces then ``[bash] <command pieces> [/bash]`` (commands), each observation is observation pieces, and
the submit command becomes ``[EOS]``. The live episode (`ShellTool`) produces the very same tokens.

Real mini-SWE-agent records come in three shapes, all read: v1 (``trajectory_format`` ``mini-swe-agent-1``:
```` ```bash ```` blocks, submitting with ``echo MINI_SWE_AGENT_FINAL_OUTPUT``), v2 text (``mini-swe-agent-1.1``:
```` ```mswea_bash_command ```` blocks, submitting with ``echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT``), and v2
tool calls (assistant messages with ``content`` None and OpenAI ``tool_calls`` whose arguments hold the
``command``; observations are ``tool`` messages). Every trajectory ends with ``[EOS]``, and a record with no
action at all is a one-line error rather than a silent empty trajectory.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from toolssm.protocol import BOS, EOS, Role, Trajectory
from toolssm.tasks.codefix.agents import SUBMIT, Policy, make_agent
from toolssm.tasks.codefix.codebase import Codebase, generate
from toolssm.tasks.codefix.verify import LIMITS, verify
from toolssm.tools.shell import BASH, END_BASH, Limits, ShellSandbox

FORMAT = "mini-swe-agent-1"
SYSTEM = "You fix Python code with bash commands. Reply with one bash block."
TASK = "v10 is set in main.py and printed in foo.py but not passed down. Fix it."
#: the sandbox environment the task's commands run in (plain tracebacks, no ^^^ markers, no .pyc files)
ENV = {"PYTHONNODEBUGRANGES": "1", "PYTHONDONTWRITEBYTECODE": "1"}
#: mini-SWE-agent's action regex: v1's ```bash block, or v2's ```mswea_bash_command block
ACTION = re.compile(r"```(?:bash|mswea_bash_command)\s*\n(.*?)\n```", re.DOTALL)
#: the commands that submit: v2's (and this task's), and v1's
SUBMITS = (SUBMIT, "echo MINI_SWE_AGENT_FINAL_OUTPUT")


def assistant(command: str, thought: str = "") -> dict[str, str]:
    return {"role": "assistant", "content": f"{thought}```bash\n{command}\n```"}


def split_action(content: str) -> tuple[str, str | None]:
    """(thought, command) of an assistant message; command None if it has no bash block."""
    m = ACTION.search(content)
    if m is None:
        return content, None
    return content[: m.start()], m.group(1)


def run_agent(
    codebase: Codebase, agent: Policy | str, *, seed: int | None = None, limits: Limits | None = None,
    max_turns: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Drive an agent in a fresh sandbox over ``codebase``; return its record (verified)."""
    name = agent if isinstance(agent, str) else type(agent).__name__
    policy = make_agent(agent) if isinstance(agent, str) else agent
    max_turns = max_turns or 8 * codebase.n + 16
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": TASK},
    ]
    obs: str | None = None
    status = "LimitsExceeded"
    with ShellSandbox(codebase.files(), limits=limits or LIMITS, env=ENV) as sh:
        for _ in range(max_turns):
            cmd = policy(obs)
            messages.append(assistant(cmd))
            if cmd.startswith(SUBMIT):
                status = "Submitted"
                break
            obs = sh.run(cmd).observation()
            messages.append({"role": "user", "content": obs})
        files = sh.files()
    v = verify(codebase, files, limits=limits)
    info = {
        "exit_status": status, "submission": "",
        "codefix": {
            "n": codebase.n, "seed": seed, "agent": name, "fixed": v.fixed, "clean": v.clean,
            "problems": list(v.problems), "other_touched": list(v.other_touched), "files": codebase.files(),
        },
    }  # fmt: skip
    return {"info": info, "messages": messages, "trajectory_format": FORMAT}


def collect(agent: str, sizes: Sequence[int], count: int, *, seed: int | str = 0) -> list[dict[str, Any]]:
    """``count`` records of ``agent`` on codebases with sizes drawn uniformly from ``sizes``."""
    out = []
    for i in range(count):
        rng = random.Random(f"codefix:{seed}:{i}")
        n = rng.choice(list(sizes))
        out.append(run_agent(generate(rng, n), agent, seed=i))
    return out


def paper_filter(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The paper's selection (App. E): keep trajectories that fixed the bug and are shorter (in messages)
    than the average for their codebase size."""
    fixed = [
        r for r in records if r["info"].get("codefix", {}).get("fixed", r["info"].get("exit_status") == "Submitted")
    ]
    by_n: dict[Any, list[int]] = {}
    for r in fixed:
        by_n.setdefault(r["info"].get("codefix", {}).get("n"), []).append(len(r["messages"]))
    mean = {n: sum(v) / len(v) for n, v in by_n.items()}
    return [r for r in fixed if len(r["messages"]) <= mean[r["info"].get("codefix", {}).get("n")]]


# -- files -----------------------------------------------------------------------------------------
def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return path


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Records from our JSONL, or from one mini-SWE-agent ``.traj.json`` (or a folder of them)."""
    path = Path(path)
    if path.is_dir():
        return [r for p in sorted(path.rglob("*.traj.json")) for r in read_records(p)]
    if not path.is_file():
        raise ValueError(f"no trajectories at {path}")
    text = path.read_text()
    lines = [(0, text)] if path.suffix == ".json" else [(i, x) for i, x in enumerate(text.splitlines(), 1) if x.strip()]
    records = []
    for i, line in lines:
        where = f"{path}, line {i}" if i else str(path)
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not JSON ({e})") from None
        msgs = r.get("messages") if isinstance(r, dict) else None
        if not isinstance(msgs, list) or not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in msgs):
            raise ValueError(f"{where}: not a mini-SWE-agent trajectory (expected a 'messages' list of "
                             f"{{'role': ..., 'content': ...}})")  # fmt: skip
        records.append(r)
    return records


# -- tokens ----------------------------------------------------------------------------------------
def prompt(messages: Sequence[dict[str, Any]]) -> str:
    """The input text: every message before the first assistant message, one per line."""
    head = []
    for m in messages:
        if m["role"] == "assistant":
            break
        head.append(_text(m))
    return "\n".join(head)


def _text(message: dict[str, Any]) -> str:
    c = message.get("content", "")
    if c is None:  # a tool-call message: no text, not the word "None"
        return ""
    if isinstance(c, list):  # OpenAI content parts
        return "".join(p.get("text", "") for p in c if isinstance(p, dict))
    return str(c)


def _call_command(call: Any) -> str | None:
    """The bash command of one OpenAI-style tool call ({"function": {"name", "arguments"}}), None if it has none."""
    fn = call.get("function") if isinstance(call, dict) else None
    args = fn.get("arguments") if isinstance(fn, dict) else None
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    cmd = args.get("command") if isinstance(args, dict) else None
    return cmd if isinstance(cmd, str) else None


def actions(message: dict[str, Any]) -> tuple[str, list[str]]:
    """(thought, commands) of an assistant message: its tool calls' commands (mini-SWE-agent v2's tool-call mode),
    else the bash block of its text (v1's ```bash, v2's ```mswea_bash_command); no command if it has neither."""
    calls = message.get("tool_calls") or []
    if calls:
        return _text(message), [c for c in map(_call_command, calls) if c is not None]
    thought, cmd = split_action(_text(message))
    return thought, [] if cmd is None else [cmd]


def _submits(command: str) -> bool:
    return command.strip().startswith(SUBMITS)


def to_trajectory(record: dict[str, Any], bpe, where: str = "record") -> Trajectory:
    """Protocol tokens with roles for a record (see the module docstring). Every trajectory ends with ``[EOS]``:
    at the submit command (v1's or v2's), else after the last message (an agent stopped by a limit). Observations
    are ``user`` and ``tool`` messages; other roles after the first assistant message (v2's ``exit``) carry no
    tokens. ValueError (one line, naming ``where``) for a record with no action to learn from."""
    msgs = record["messages"]
    traj = Trajectory()
    traj.extend([BOS, *bpe.encode(prompt(msgs))], Role.INPUT)
    start = next((i for i, m in enumerate(msgs) if m["role"] == "assistant"), len(msgs))
    n_actions = 0
    for m in msgs[start:]:
        if m["role"] == "assistant":
            thought, cmds = actions(m)
            traj.extend(bpe.encode(thought), Role.THOUGHT)
            if any(_submits(c) for c in cmds):
                cmds = cmds[: next(i for i, c in enumerate(cmds) if _submits(c))]
                for cmd in cmds:
                    traj.extend([BASH, *bpe.encode(cmd), END_BASH], Role.COMMAND)
                n_actions += len(cmds) + 1
                break
            for cmd in cmds:
                traj.extend([BASH, *bpe.encode(cmd), END_BASH], Role.COMMAND)
            n_actions += len(cmds)
        elif m["role"] in ("user", "tool"):
            traj.extend(bpe.encode(_text(m)), Role.OBSERVATION)
    if n_actions == 0:
        raise ValueError(f"{where}: no action in any assistant message (no ```bash or ```mswea_bash_command block, "
                         f"no bash tool call)")  # fmt: skip
    traj.append(EOS, Role.OUTPUT)
    return traj


def texts(records: Iterable[dict[str, Any]]) -> Iterable[str]:
    """Every message text (and tool-call command), for training the tokenizer."""
    for r in records:
        for m in r["messages"]:
            yield _text(m)
            if m.get("role") == "assistant" and m.get("tool_calls"):
                yield from actions(m)[1]
