"""The verifier: does the edited codebase run, and is v10 threaded along every path from main to foo?

It checks the files by analysis and by execution, never by comparing with the reference fix's text:

1. **runs:** ``python3 main.py`` in the sandbox exits 0 and prints what the fixed program must print
   (``Codebase.expected_stdout``, by simulation: foo prints main's v10 once per path);
2. **threaded:** parsed with ``ast``, every function on a path from main to foo (foo included, main
   excepted) takes a parameter ``v10`` and assigns it nowhere, and every call along such a path passes the
   caller's ``v10`` in the callee's ``v10`` slot (positional or keyword);
3. **other functions touched:** the functions off every path whose definition changed (as ``ast``, so
   whitespace does not count), and files added or deleted. Reported, not required (the paper's "leaving
   other functions untouched is ideal but not enforced").

``fixed`` is 1 and 2; it is the verdict's ``correct``, so `Codefix.verify` grades a finished episode's
workspace through the same `Task.verify` call as every other task.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass, field

from toolssm.tasks.base import Verdict
from toolssm.tasks.codefix.codebase import BUG, ROOT, Codebase
from toolssm.tools.shell import Limits, ShellSandbox

RUN = "python3 main.py"
#: generous wall clock: on a loaded machine a tiny program can wait seconds for a core (RLIMIT_CPU still
#: stops a runaway loop after 5 CPU seconds)
LIMITS = Limits(wall_s=60)


@dataclass(frozen=True)
class CodefixVerdict(Verdict):
    """`Verdict` (``correct`` = ``fixed``) plus what the verifier found."""

    fixed: bool = False
    runs: bool = False
    threaded: bool = False
    #: what is wrong with the threading, one line each (empty when threaded)
    problems: tuple[str, ...] = ()
    #: functions off every main-to-foo path that were changed, and files added or deleted
    other_touched: tuple[str, ...] = ()
    returncode: int | None = None
    stderr_tail: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return self.fixed and not self.other_touched


def _function(source: str, name: str) -> ast.FunctionDef | None:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    return None


def _param_index(fn: ast.FunctionDef, var: str) -> int | None:
    names = [a.arg for a in fn.args.args]
    return names.index(var) if var in names else None


def check_threading(codebase: Codebase, files: Mapping[str, str]) -> list[str]:
    """Problems with v10's threading in ``files`` (an empty list: threaded along every path)."""
    problems: list[str] = []
    defs = {f.name: _function(files.get(f.file, ""), f.name) for f in codebase.functions}
    for f in codebase.functions:
        if f.name in codebase.on_path and defs[f.name] is None:
            problems.append(f"{f.file}: function {f.name} missing or unparsable")
    if problems:
        return problems
    for f in codebase.functions:
        if f.name not in codebase.on_path:
            continue
        fn = defs[f.name]
        assert fn is not None
        if f.name != ROOT:
            if _param_index(fn, BUG) is None:
                problems.append(f"{f.name} does not take {BUG}")
            for node in ast.walk(fn):
                if isinstance(node, ast.Name) and node.id == BUG and isinstance(node.ctx, ast.Store):
                    problems.append(f"{f.name} assigns {BUG} instead of receiving it")
                    break
        for c, _ in f.calls:
            if c not in codebase.on_path:
                continue
            callee = defs[c]
            assert callee is not None
            slot = _param_index(callee, BUG)
            sites = [
                n for n in ast.walk(fn) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == c
            ]
            if not sites:
                problems.append(f"{f.name} no longer calls {c}")
            for call in sites:
                arg = None
                if slot is not None and slot < len(call.args):
                    arg = call.args[slot]
                for kw in call.keywords:
                    if kw.arg == BUG:
                        arg = kw.value
                if not (isinstance(arg, ast.Name) and arg.id == BUG):
                    problems.append(f"{f.name} does not pass {BUG} to {c}")
    return problems


def touched_elsewhere(codebase: Codebase, files: Mapping[str, str]) -> list[str]:
    """Functions off every main-to-foo path that changed, then added and deleted files."""
    out = []
    original = codebase.files()
    for f in codebase.functions:
        if f.name in codebase.on_path or f.file not in files:
            continue
        before, after = (
            _function(original[f.file], f.name),
            _function(files[f.file], f.name),
        )
        if (
            after is None
            or ast.dump(before) != ast.dump(after)
            or _imports(original[f.file]) != _imports(files[f.file])
        ):
            out.append(f.name)
    out += [f"added {p}" for p in sorted(set(files) - set(original))]
    out += [f"deleted {p}" for p in sorted(set(original) - set(files))]
    return out


def _imports(source: str) -> str:
    try:
        return ast.dump(
            ast.Module(
                [n for n in ast.parse(source).body if not isinstance(n, ast.FunctionDef)],
                [],
            )
        )
    except SyntaxError:
        return "unparsable"


def verify(codebase: Codebase, files: Mapping[str, str], *, limits: Limits | None = None) -> CodefixVerdict:
    """Judge an edited codebase (relative path -> text). Runs main.py in a fresh sandbox."""
    with ShellSandbox(files, limits=limits or LIMITS) as sh:
        r = sh.run(RUN)
    runs = r.returncode == 0 and r.stdout == codebase.expected_stdout()
    problems = check_threading(codebase, files)
    other = tuple(touched_elsewhere(codebase, files))
    stderr_tail = "\n".join(r.stderr.strip().splitlines()[-3:])
    fixed = runs and not problems
    if fixed:
        got = "fixed" + (f"; also touched {', '.join(other)}" if other else ", nothing else touched")
    else:
        why = [] if runs else [f"main.py exits {r.returncode}" + (f" ({stderr_tail.splitlines()[-1]})" if stderr_tail
                                                               else ", printing the wrong lines" * (r.returncode == 0))]
        got = "not fixed: " + "; ".join([*why, *problems][:3])
    expected = f"{BUG} threaded along every path from {ROOT} to foo ({len(codebase.on_path)} of {codebase.n} functions)"
    return CodefixVerdict(
        correct=fixed, expected=expected, got=got,
        fixed=fixed, runs=runs, threaded=not problems, problems=tuple(problems),
        other_touched=other, returncode=r.returncode, stderr_tail=stderr_tail,
    )  # fmt: skip
