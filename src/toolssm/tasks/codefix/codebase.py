"""The codebase generator (paper §3.3, App. E): n Python functions, one per file, with one bug.

- ``main`` in ``main.py`` is the root; the other names come from f0..f999, except the last function
  added, ``foo``. Functions are added one at a time; each new one is imported and called by one or two
  existing functions (its parents), so the imports form a DAG in which every function is reachable from
  ``main``.
- Variables v0..v9 are declared (one local per function, two in ``main``), passed to children as
  positional arguments, and printed (one ``print`` per function).
- **The bug:** ``v10`` is declared in ``main`` and printed by ``foo``, but never passed down. The fix
  threads it along every path from ``main`` to ``foo``: every function on such a path (``foo`` included,
  ``main`` excepted) takes ``v10`` as a parameter, and every call along such a path passes it.

A file, e.g. ``f12.py``::

    from f3 import f3
    from foo import foo

    def f12(v2, v5):
        v7 = 41
        f3(v2, v7)
        foo(v5)
        print(v7)
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property

VARS = tuple(f"v{i}" for i in range(10))
BUG = "v10"
ROOT, TARGET = "main", "foo"


@dataclass(frozen=True)
class Function:
    name: str
    params: tuple[str, ...]
    #: declared locals, (name, value)
    locals: tuple[tuple[str, int], ...]
    #: calls in order, (child, argument names)
    calls: tuple[tuple[str, tuple[str, ...]], ...]
    #: printed variables
    prints: tuple[str, ...]

    @property
    def file(self) -> str:
        return f"{self.name}.py"

    def source(self) -> str:
        lines = [f"from {c} import {c}" for c, _ in self.calls]
        if lines:
            lines.append("")
        lines.append(f"def {self.name}({', '.join(self.params)}):")
        lines += [f"    {v} = {x}" for v, x in self.locals]
        lines += [f"    {c}({', '.join(args)})" for c, args in self.calls]
        lines.append(f"    print({', '.join(self.prints)})")
        if self.name == ROOT:
            lines += ["", f"{ROOT}()"]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Codebase:
    """Functions in creation order: ``main`` first, ``foo`` last."""

    functions: tuple[Function, ...]

    @property
    def n(self) -> int:
        return len(self.functions)

    @cached_property
    def by_name(self) -> dict[str, Function]:
        return {f.name: f for f in self.functions}

    def files(self) -> dict[str, str]:
        return {f.file: f.source() for f in self.functions}

    @cached_property
    def on_path(self) -> frozenset[str]:
        """Functions on some path from main to foo: foo and its ancestors (main included)."""
        parents: dict[str, list[str]] = {f.name: [] for f in self.functions}
        for f in self.functions:
            for c, _ in f.calls:
                parents[c].append(f.name)
        seen, stack = {TARGET}, [TARGET]
        while stack:
            for p in parents[stack.pop()]:
                if p not in seen:
                    seen.add(p)
                    stack.append(p)
        return frozenset(seen)

    def fixed(self) -> Codebase:
        """The reference fix: v10 threaded along every path from main to foo, nothing else touched."""
        out = []
        for f in self.functions:
            if f.name not in self.on_path:
                out.append(f)
                continue
            params = f.params if f.name == ROOT else (*f.params, BUG)
            calls = tuple((c, (*a, BUG) if c in self.on_path else a) for c, a in f.calls)
            out.append(Function(f.name, params, f.locals, calls, f.prints))
        return Codebase(tuple(out))

    def expected_stdout(self) -> str:
        """What the fixed program prints, by simulation (foo prints v10 as main declared it)."""
        lines: list[str] = []

        def call(name: str, env: dict[str, int]) -> None:
            f = self.by_name[name]
            env = dict(env)
            for v, x in f.locals:
                env[v] = x
            for c, args in f.calls:
                child = self.by_name[c]
                call(
                    c,
                    {**dict(zip(child.params, (env[a] for a in args))), BUG: env[BUG]},
                )
            lines.append(" ".join(str(env[v]) for v in f.prints))

        call(ROOT, {})
        return "\n".join(lines) + "\n"


def generate(rng: random.Random, n: int) -> Codebase:
    """A random codebase of ``n`` >= 2 functions with the v10 bug."""
    if n < 2:
        raise ValueError(f"bad codebase size {n}: need at least 2 functions (main and foo)")
    if n > 1000:
        raise ValueError(f"bad codebase size {n}: at most 1000 functions (names f0..f999)")
    names = [ROOT, *(f"f{i}" for i in rng.sample(range(1000), n - 2)), TARGET]
    params: dict[str, tuple[str, ...]] = {ROOT: ()}
    local: dict[str, tuple[tuple[str, int], ...]] = {}
    calls: dict[str, list[tuple[str, tuple[str, ...]]]] = {name: [] for name in names}
    for k, name in enumerate(names):
        if k:
            params[name] = tuple(rng.sample(VARS, rng.randint(1, 2)))
        free = [v for v in VARS if v not in params[name]]
        local[name] = tuple((v, rng.randint(0, 99)) for v in rng.sample(free, 2 if k == 0 else 1))
        if k:
            n_parents = 1 if k == 1 else rng.choice((1, 2))
            for p in sorted(rng.sample(range(k), n_parents)):
                scope = [*params[names[p]], *(v for v, _ in local[names[p]])]
                calls[names[p]].append((name, tuple(rng.choice(scope) for _ in params[name])))
    functions = []
    for k, name in enumerate(names):
        scope = [*params[name], *(v for v, _ in local[name])]
        locals_ = local[name] + (((BUG, rng.randint(0, 99)),) if name == ROOT else ())
        prints = (rng.choice(scope), BUG) if name == TARGET else (rng.choice(scope),)
        functions.append(Function(name, params[name], locals_, tuple(calls[name]), prints))
    return Codebase(tuple(functions))
