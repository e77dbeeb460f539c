r"""The two hard-coded agents (paper App. E). Each is a policy: the last observation in, the next bash
command out (or `SUBMIT`). They see the codebase only through the shell, like a model would.

- **single-turn:** print every file (``tail -n +1 *.py``), then, from that one observation, make all the
  edits in one command and submit. After the first observation nothing new is learned: the paper's
  single-turn regime, where the edits depend on the whole codebase at once.
- **interactive:** run the program, read the last frame of the traceback, fix that one file (the paper
  allows up to 3 files per turn; one is always enough here), run again, until it runs cleanly; then
  submit. Every command follows from the last command and the last observation alone (a local policy,
  docs/design.md):

  =====================================================  ==================================================
  the last frame is ``in G`` (file F) and the error is   the fix: one substitution with ``sed -i`` on F
  =====================================================  ==================================================
  ``NameError: name 'v10' is not defined``               G takes v10: ``s/def G(\(.*\)):/def G(\1, v10):/``
  ``TypeError: X() missing 1 required ... 'v10'``        G passes it: ``s/X(\(.*\))/X(\1, v10)/``
  =====================================================  ==================================================

  v10 is appended (Python names the *last* missing argument, so appending keeps the error about v10), and
  each error names exactly one thing to add, so no edit is ever made twice: a function on two paths to foo
  first gets a call fixed, then fails with NameError and gets the parameter, once.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from toolssm.tasks.codefix.codebase import BUG, ROOT, TARGET

SUBMIT = "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"
#: the interactive agent's probe: stdout dropped, the traceback's last frame and error line kept
RUN = "python3 main.py 2>&1 >/dev/null | tail -n 3"
SHOW = "tail -n +1 *.py"

Policy = Callable[[str | None], str]

_FRAME = re.compile(r'File "[^"]*?(\w+)\.py", line \d+, in (\w+)')
_MISSING = re.compile(r"TypeError: (\w+)\(\) missing 1 required positional argument: 'v10'")
_UNDEFINED = re.compile(r"NameError: name 'v10' is not defined")
_FILE = re.compile(r"==> (\w+)\.py <==\n(.*?)(?=\n==> |\Z)", re.DOTALL)
_CALL = re.compile(r"^    (\w+)\(", re.MULTILINE)
_DEF = re.compile(r"^def (\w+)\(", re.MULTILINE)


def take_bug(fn: str) -> str:
    """sed substitution: ``fn`` takes v10 as its last parameter (every function but main has one)."""
    return rf"s/def {fn}(\(.*\)):/def {fn}(\1, {BUG}):/"


def pass_bug(callee: str) -> str:
    """sed substitution: the call to ``callee`` passes v10 as its last argument."""
    return rf"s/{callee}(\(.*\))/{callee}(\1, {BUG})/"


def sed(file: str, edits: list[str]) -> str:
    return f"sed -i '{'; '.join(edits)}' {file}.py"


def fix_from_traceback(observation: str) -> str | None:
    """The one edit a traceback's last frame asks for, or None if it asks for none we know."""
    frames = _FRAME.findall(observation)
    if not frames:
        return None
    file, fn = frames[-1]
    missing = _MISSING.search(observation)
    if missing:
        return sed(file, [pass_bug(missing.group(1))])
    if _UNDEFINED.search(observation) and fn != ROOT:
        return sed(file, [take_bug(fn)])
    return None


class InteractiveAgent:
    """Alternates: run the program; if it fails, one fix; run again. Submits after a clean run."""

    def __init__(self) -> None:
        self.last: str | None = None

    def __call__(self, observation: str | None) -> str:
        if self.last != RUN:
            self.last = RUN
        else:
            self.last = fix_from_traceback(observation or "") or SUBMIT
        return self.last


def parse_listing(observation: str) -> dict[str, tuple[str, list[str]]]:
    """``tail -n +1 *.py`` output -> file stem -> (defined function, called functions in order)."""
    out = {}
    for stem, body in _FILE.findall(observation):
        m = _DEF.search(body)
        out[stem] = (m.group(1) if m else stem, _CALL.findall(body))
    return out


def single_turn_edits(observation: str) -> str:
    """All the edits at once, from the listing of every file: the functions that reach foo take v10,
    and every call to one of them (or to foo) passes it."""
    listing = parse_listing(observation)
    calls = {fn: [c for c in cs if c != fn] for fn, cs in listing.values()}
    file_of = {fn: stem for stem, (fn, _) in listing.items()}
    reach = {TARGET}
    changed = True
    while changed:  # fixpoint: a function reaches foo if it calls one that does
        changed = False
        for fn, cs in calls.items():
            if fn not in reach and any(c in reach for c in cs):
                reach.add(fn)
                changed = True
    cmds = []
    for fn in sorted(reach, key=lambda f: (f != ROOT, f != TARGET, f)):
        edits = [] if fn == ROOT else [take_bug(fn)]
        edits += [pass_bug(c) for c in calls.get(fn, []) if c in reach]
        cmds.append(sed(file_of.get(fn, fn), edits))
    return " && ".join(cmds)


class SingleTurnAgent:
    """Print every file; make every edit in one command; submit."""

    def __init__(self) -> None:
        self.turn = 0

    def __call__(self, observation: str | None) -> str:
        self.turn += 1
        if self.turn == 1:
            return SHOW
        if self.turn == 2:
            return single_turn_edits(observation or "")
        return SUBMIT


AGENTS: dict[str, Callable[[], Policy]] = {
    "single-turn": SingleTurnAgent,
    "interactive": InteractiveAgent,
}


def make_agent(name: str) -> Policy:
    try:
        return AGENTS[name]()
    except KeyError:
        raise ValueError(f"unknown agent {name!r} (choose from: {', '.join(AGENTS)})") from None
