"""Plugins: a package outside the source tree adds a task, a tool and a model through entry points, and toolssm
finds them with no edit to itself (docs/adding.md has the same package).

The package is written to a temporary folder with its entry-point metadata (a ``.dist-info`` folder, what
``pip install`` leaves), and that folder goes on ``PYTHONPATH``: `importlib.metadata` finds the entry points
there as it would in site-packages. Everything runs in subprocesses, as a user would run it.
"""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import toolssm

SRC = str(Path(toolssm.__file__).resolve().parent.parent)

TOOLS = '''
from toolssm.tools import Tool, register_tool

NEXT, END = "[next]", "[END]"


@register_tool("plugin-reader")
class Reader(Tool):
    """Holds the input; each [next] answers with its next symbol, or [END] past the last."""

    tokens = (NEXT, END)

    def reset(self, input_tokens):
        self.tape, self.i = list(input_tokens), 0
        return []

    def accepts(self, token):
        return token == NEXT

    def step(self, command):
        if self.i == len(self.tape):
            return [END]
        self.i += 1
        return [self.tape[self.i - 1]]
'''

TASKS = '''
import random

from toolssm.protocol import ANS, EOS
from toolssm.tasks import Task, Verdict, register
from toolssm_copy.tools import END, NEXT, Reader


@register
class Copy(Task):
    """Copy a string of a and b that only the tool holds, one [next] at a time."""

    name = "plugin-copy"
    symbols = ("a", "b")
    input_in_context = False  # the model reads the string only through the tool
    replay_spec = "500"

    def make_tool(self):
        return Reader()

    def sample(self, rng, max_size):
        return tuple(rng.choice("ab") for _ in range(rng.randint(1, max_size)))

    def sample_eval(self, rng, spec):
        return tuple(rng.choice("ab") for _ in range(self.parse_spec(spec)))

    def parse(self, text):
        if not text or set(text) - set("ab"):
            raise ValueError(f"bad problem {text!r}: expected a string of a and b")
        return tuple(text)

    def input_tokens(self, problem):
        return list(problem)

    def expert(self, problem, episode):
        episode.act(ANS)
        while (obs := episode.act(NEXT)) != [END]:
            episode.act(obs[0])
        episode.act(EOS)

    def verify(self, problem, episode):
        got, expected = "".join(episode.output), "".join(problem)
        return Verdict(got == expected, expected, got)

    def size(self, problem):
        return len(problem)
'''

MODELS = '''
from torch import nn

from toolssm.models.base import SequenceModel, register


@register("plugin-gru", presets={"cpu": {"d_model": 16, "n_layers": 1}, "paper": {"d_model": 256, "n_layers": 2}})
class TinyGRU(SequenceModel):
    """A GRU: a fixed-size state (B, n_layers, D), batch first as the rollout wants it."""

    def __init__(self, vocab_size: int, d_model: int, n_layers: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.gru = nn.GRU(d_model, d_model, num_layers=n_layers, batch_first=True)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, tokens, state=None):  # (B, T) -> logits (B, T, V), state
        h0 = None if state is None else state[0].transpose(0, 1).contiguous()  # (B, L, D) -> (L, B, D)
        out, h = self.gru(self.embed(tokens), h0)  # out: (B, T, D)
        return self.head(out), (h.transpose(0, 1),)
'''


def make_package(root: Path, name: str, modules: dict[str, str], entry_points: str) -> Path:
    """A package ``name`` in ``root`` with its distribution metadata, as ``pip install --target root`` leaves it."""
    pkg = root / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for mod, text in modules.items():
        (pkg / f"{mod}.py").write_text(textwrap.dedent(text))
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    return root


COPY_ENTRY_POINTS = """
[toolssm.tasks]
plugin-copy = toolssm_copy.tasks

[toolssm.tools]
plugin-reader = toolssm_copy.tools

[toolssm.models]
plugin-gru = toolssm_copy.models
"""


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("site")
    return make_package(root, "toolssm_copy", {"tools": TOOLS, "tasks": TASKS, "models": MODELS}, COPY_ENTRY_POINTS)


def toolssm_run(*args: str, path: list[Path], cwd: Path, module: str = "toolssm.cli") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, *map(str, path)]), "OMP_NUM_THREADS": "1"}
    env.pop("TOOLSSM_DEBUG", None)
    argv = [sys.executable, "-m", module, *args] if module else [sys.executable, *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def test_a_plugin_task_tool_and_model_train_evaluate_and_solve(plugin, tmp_path):
    run = tmp_path / "run"
    r = toolssm_run("train", "--task", "plugin-copy", "--model", "plugin-gru", "--train-size", "4", "--steps", "60",
                    "--batch-size", "16", "--lr", "0.05", "--warmup", "5", "--out", str(run), "--no-progress",
                    "--threads", "1", path=[plugin], cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert (run / "checkpoint" / "config.json").is_file()
    r = toolssm_run("eval", "--checkpoint", str(run), "--lengths", "4", "16", "--n-problems", "4", "--no-progress",
                    path=[plugin], cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "evaluating plugin-gru on plugin-copy" in r.stdout and (run / "eval" / "results.json").is_file()
    r = toolssm_run("solve", "--checkpoint", str(run), "abba", path=[plugin], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "verdict:" in r.stdout
    # --help lists the plugin's names among the choices of --task and --model (completion reads the same choices)
    r = toolssm_run("train", "--help", path=[plugin], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    flat = "".join(r.stdout.split())
    assert re.search(r"--task\{[^}]*plugin-copy[^}]*\}", flat) and re.search(r"--model\{[^}]*plugin-gru[^}]*\}", flat)
    # without the plugin on the path the names are unknown: one-line errors
    r = toolssm_run("train", "--task", "plugin-copy", "--out", str(tmp_path / "x"), path=[], cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().startswith("toolssm: error: unknown task 'plugin-copy'")
    assert len(r.stderr.strip().splitlines()) == 1


def test_the_task_contract_runs_on_a_plugin_task(plugin, tmp_path):
    tests = Path(__file__).resolve().parent
    r = toolssm_run("-q", "-p", "no:cacheprovider", str(tests / "test_task_contract.py"), "-k",
                    "plugin-copy or repr", path=[plugin], cwd=tmp_path, module="pytest")  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:]
    assert "5 passed" in r.stdout, r.stdout[-1000:]  # 4 checks on plugin-copy, and the repr of every task


def test_a_duplicate_name_is_a_one_line_error_naming_both_places(plugin, tmp_path):
    dupe = make_package(tmp_path / "dupe", "toolssm_dupe", {"tasks": TASKS.replace('"plugin-copy"', '"addition"')},
                        "[toolssm.tasks]\naddition = toolssm_dupe.tasks\n")
    r = toolssm_run("train", "--task", "addition", "--out", str(tmp_path / "x"), path=[plugin, dupe], cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-2000:]
    assert lines[0].startswith("toolssm: error: task 'addition' is registered twice: by toolssm.tasks.addition.Addition")
    assert "toolssm_dupe.tasks.Copy" in lines[0] and "package toolssm-dupe" in lines[0]
    assert not (tmp_path / "x").exists()
    dupe_model = make_package(tmp_path / "dm", "toolssm_dm", {"models": MODELS.replace('"plugin-gru"', '"lstm"')},
                              "[toolssm.models]\nlstm = toolssm_dm.models\n")  # fmt: skip
    r = toolssm_run("train", "--model", "lstm", "--out", str(tmp_path / "y"), path=[dupe_model], cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-2000:]
    assert "model 'lstm' is registered twice: by toolssm.models.rnn." in lines[0] and "toolssm_dm.models.TinyGRU" in lines[0]


def test_a_broken_plugin_is_a_one_line_warning_and_the_others_still_work(plugin, tmp_path):
    broken = make_package(tmp_path / "broken", "toolssm_broken", {"tasks": "import no_such_module_anywhere\n"},
                          "[toolssm.tasks]\nbroken = toolssm_broken.tasks\n[toolssm.models]\nempty = toolssm_broken\n")
    code = ("from toolssm.tasks import task_names; from toolssm.models import model_names; "
            "print(sorted(set(task_names()) & {'addition', 'plugin-copy', 'broken'}), 'empty' in model_names())")
    r = toolssm_run("-c", code, path=[broken, plugin], cwd=tmp_path, module="")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "['addition', 'plugin-copy'] False"
    warnings = r.stderr.strip().splitlines()
    assert len(warnings) == 2, r.stderr
    assert warnings[0].startswith("toolssm: warning: task plugin 'broken' (package toolssm-broken, entry point "
                                  "toolssm.tasks:broken = toolssm_broken.tasks) failed to load, left out: "
                                  "ModuleNotFoundError: No module named 'no_such_module_anywhere'")  # fmt: skip
    assert warnings[1].startswith("toolssm: warning: model plugin 'empty'") and "registered no model" in warnings[1]
