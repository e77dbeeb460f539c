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
