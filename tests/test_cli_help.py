"""The CLI is tyro's subcommands over `COMMANDS`: help, usage, suggestions and completion come from the configs."""

import contextlib
import io
import re

import pytest

from toolssm.cli import COMMANDS, main


def _help(argv: list[str]) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code in (0, None)
    return buf.getvalue()


def _entries(text: str) -> list[tuple[str, str]]:
    """(flag, its help text) for every option in a --help page."""
    out: list[list[str]] = []
    for raw in text.splitlines():
        ln = re.sub(r"^[\s│|]+|[\s│|]+$", "", raw)
        if not ln or set(ln) <= set("-─ ╭╮╰╯"):
            continue
        m = re.match(r"^(--?[\w.-]+(?:, --?[\w.-]+)*)(?:\s+(.*))?$", ln)
        if m:
            out.append([m.group(1), m.group(2) or ""])
        elif out:
            out[-1][1] += " " + ln
    return [(f, h) for f, h in out]


def test_top_level_help_lists_every_command_with_its_summary():
    text = _help(["--help"])
    for name, (cls, _) in COMMANDS.items():
        assert name in text
        assert " ".join(cls.__doc__.split()[:3]) in " ".join(text.split())


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_flag_has_help_text(command):
    entries = _entries(_help([command, "--help"]))
    assert len(entries) >= 2  # -h and at least one flag (positionals are not flags)
    bare = []
    for flag, text in entries:
        if flag.startswith("-h"):
            continue
        words = re.sub(r"\((default|fixed to|required)[^)]*\)|\{[^}]*\}|\[[^\]]*\]|\b[A-Z][A-Z_|]+\b|\.\.\.", "", text)
        if not words.strip():
            bare.append(flag)
    assert not bare, f"flags without help text in `toolssm {command} --help`: {bare}"


def test_an_unknown_flag_keeps_tyros_suggestion(capsys):
    assert main(["train", "--stpes", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("toolssm: error:") and "\n" not in err
    assert "--stpes" in err and "perhaps you meant --steps" in err


def _choices(text: str, flag: str) -> set[str]:
    """The choices `--help` lists for one flag, e.g. ``--task {addition,hanoi,...}`` (wrapped over lines)."""
    flat = re.sub(r"[\s│|]+", "", text)
    m = re.search(re.escape(flag) + r"\[?\{([^}]*)\}", flat)
    assert m, f"{flag} lists no choices"
    return set(m.group(1).split(","))


def test_task_model_preset_and_device_are_choices_from_the_registries():
    from toolssm.models import model_names
    from toolssm.models.base import MODELS
    from toolssm.tasks import task_names

    text = _help(["train", "--help"])
    assert _choices(text, "--task") == set(task_names())
    assert _choices(text, "--model") == set(model_names())
    assert _choices(text, "--model.preset") == {p for n in model_names() for p in MODELS.get(n).presets}
    assert {"auto", "cpu", "cuda"} <= _choices(text, "--device")
    assert "(default: addition)" in " ".join(text.split())  # the default as a name, not tyro's "['addition']"
    assert _choices(_help(["compare", "--help"]), "--models") == set(model_names())
    assert _choices(_help(["solve", "--help"]), "--engine") == {"auto", "compiled", "torch"}


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["train", "--task", "additon"], "unknown task 'additon' (choose from: addition, "),
        (["train", "--model", "lstmm"], "unknown model 'lstmm' (choose from: "),
        (["train", "--model.preset", "cpuu"], "unknown preset 'cpuu' (choose from: cpu, paper); perhaps you meant cpu"),
        (["eval", "--device", "tpu"], "unknown device 'tpu' (choose from: auto, cpu, cuda"),
        (["compare", "--models", "lstm", "nope"], "unknown model 'nope'"),
    ],
)
def test_a_bad_choice_is_one_line_with_every_choice(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("toolssm: error:") and "\n" not in err
    assert needle in err
    if argv[-1] in ("additon", "lstmm"):
        assert f"perhaps you meant {argv[-1][:-1] if argv[-1] == 'lstmm' else 'addition'}" in err


def test_a_suggestion_names_flags_only_not_words_of_their_help(capsys):
    assert main(["train", "--stepz", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("perhaps you meant --steps (see --help)"), err  # not "--seed" from analyze's wrapped help


def test_an_unknown_command_suggests_the_closest(capsys):
    assert main(["trian"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown command 'trian'" in err and "perhaps you meant train" in err


def test_shell_completion_comes_from_the_same_definitions(tmp_path):
    path = tmp_path / "toolssm.bash"
    with pytest.raises(SystemExit) as e:
        main(["--tyro-write-completion", "bash", str(path)])
    assert e.value.code in (0, None)
    script = path.read_text()
    for name in COMMANDS:
        assert name in script
    assert "--train-size" in script and "--eval-every" in script
    assert "multiplication-x2" in script and "gated_deltanet" in script  # the choices of --task and --model
