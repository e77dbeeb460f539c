"""The package's structure: data flows one way, and model files share their layers instead of copying them.

The layers, lowest first (DEVELOPERS.md): protocol/tools -> tasks -> models -> rollout -> train/evaluate ->
sweep/reproduce/report -> cli. `LAYERS` spells that out module by module. A module may import from a lower
rank, or from its own unit (a package such as ``toolssm.tasks`` imports itself freely, without circles); two
different units of one rank do not import each other. Imports inside functions
count (they run); imports under ``if TYPE_CHECKING:`` do not.

Run it as a script for the whole graph: ``python tests/test_structure.py`` prints every module's rank, each
import circle and each import against the order.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

#: rank by rank, lowest first: the units of each rank (a unit is a module or a package, by name prefix)
LAYERS: list[tuple[str, ...]] = [
    # leaves: no toolssm imports
    ("toolssm", "toolssm.theory", "toolssm.runtime", "toolssm.paper_results", "toolssm.tokenizer", "toolssm.plots",
     "toolssm.loggers", "toolssm.paths", "toolssm.choices"),
    ("toolssm.protocol", "toolssm.provenance"),
    ("toolssm.tools", "toolssm.locality"),
    ("toolssm.tasks",),
    ("toolssm.data", "toolssm.env", "toolssm.limits"),  # trajectories as datasets; a task as a gymnasium env
    ("toolssm.analysis",),  # reads stored trajectories as train --data draws them (toolssm.data)
    ("toolssm.theory.turing",),  # Theorem 2.2 on the task layer's Turing machines
    ("toolssm.models",),
    ("toolssm.theory.gssm",),  # Theorem 2.1 with a model's state
    ("toolssm.engine",),  # the compiled decoder: model and tool kernels read from the modules below
    ("toolssm.rollout", "toolssm.checkpoint", "toolssm.batching"),
    ("toolssm.export",),  # a checkpoint out to Hugging Face
    ("toolssm.evaluate",),
    ("toolssm.train",),  # evaluates the model being trained (--eval-every)
    ("toolssm.records",),
    ("toolssm.sweep",),
    ("toolssm.report",),
    ("toolssm.experiments",),
    ("toolssm.reproduce",),
    ("toolssm.cli_theory", "toolssm.collect"),  # the theory and collect commands
    ("toolssm.cli",),
]

#: imports that still run against the order, each with the reason it stays: (module, imported) -> reason
ALLOWED: dict[tuple[str, str], str] = {
}

#: what a model file may import from toolssm.models: the interface, the shared layers and the kernels
MODEL_SHARED = {"base", "layers", "attention", "kernels", "scan_cpu"}
#: model files that compose other architectures' blocks
MODEL_COMPOSERS = {"hybrid", "rmt"}  # hybrid: Mamba and attention layers; rmt: a Mistral inside each segment


def modules(src: Path = SRC) -> dict[str, Path]:
    out = {}
    for p in sorted((src / "toolssm").rglob("*.py")):
        parts = list(p.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def imports(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported toolssm module, line) for each import in the file that runs (module level or in a function)."""
    is_pkg = path.name == "__init__.py"
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for c in child.orelse:
                    visit(c)
                continue
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                    pkg = pkg[: len(pkg) - child.level + 1]
                    base = ".".join([*pkg, *([base] if base else [])])
                for a in child.names:
                    sub = f"{base}.{a.name}"
                    found.append((sub if sub in known else base, child.lineno))
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    found = [(m, ln) for m, ln in found if m.split(".")[0] == "toolssm" and m != name]
    return sorted(set(found), key=found.index)


def graph(src: Path = SRC) -> dict[str, list[tuple[str, int]]]:
    known = modules(src)
    return {m: imports(m, p, known) for m, p in known.items()}


def unit(module: str) -> tuple[int, str]:
    """(rank, unit) of a module: the longest unit name that is the module or a package above it."""
    best = (-1, "")
    for rank, units in enumerate(LAYERS):
        for u in units:
            if (module == u or module.startswith(u + ".")) and len(u) > len(best[1]):
                best = (rank, u)
    if best[0] < 0:
        raise KeyError(f"{module} has no rank in LAYERS: add it")
    return best


def against_order(g: dict[str, list[tuple[str, int]]]) -> list[str]:
    """Each import from a higher rank, or between two units of one rank."""
    bad = []
    for m, deps in g.items():
        rm, um = unit(m)
        for d, ln in deps:
            rd, ud = unit(d)
            if rd > rm or (rd == rm and ud != um):
                bad.append(f"{m}:{ln} imports {d} ({'up' if rd > rm else 'sideways'}: rank {rm} -> {rd})")
    return bad


def circles(g: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w, _ in g.get(v, []):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in g:
        if v not in index:
            connect(v)
    return out


def model_imports(g: dict[str, list[tuple[str, int]]]) -> list[str]:
    """Model files importing another architecture's file (only `MODEL_COMPOSERS` may)."""
    bad = []
    for m, deps in g.items():
        parts = m.split(".")
        if parts[:2] != ["toolssm", "models"] or len(parts) != 3 or parts[2] in MODEL_SHARED | MODEL_COMPOSERS:
            continue
        for d, ln in deps:
            dp = d.split(".")
            if dp[:2] == ["toolssm", "models"] and len(dp) == 3 and dp[2] not in MODEL_SHARED:
                bad.append(f"{m}:{ln} imports {d}")
    return bad


# ------------------------------------------------------------------------------------------------------------


def test_every_module_has_a_rank():
    for m in modules():
        unit(m)


def test_no_import_circles():
    assert circles(graph()) == []


def test_no_import_against_the_order():
    bad = [b for b in against_order(graph()) if _pair(b) not in ALLOWED]
    assert bad == []


def test_every_allowed_exception_is_still_needed():
    stale = set(ALLOWED) - {_pair(b) for b in against_order(graph())}
    assert not stale, f"imports in ALLOWED that no longer run against the order: delete them from ALLOWED: {stale}"


def _pair(line: str) -> tuple[str, str]:
    m, _, d = line.split(" ")[:3]
    return m.split(":")[0], d


def test_model_files_import_only_the_shared_layers():
    assert model_imports(graph()) == []


def test_the_checker_sees_a_circle_and_an_upward_import(tmp_path):
    pkg = tmp_path / "toolssm"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "protocol.py").write_text("def f():\n    from toolssm.cli import main\n")
    (pkg / "cli.py").write_text("from toolssm import protocol\nfrom typing import TYPE_CHECKING\n"
                                "if TYPE_CHECKING:\n    from toolssm.train import X\n")  # fmt: skip
    g = graph(tmp_path)
    assert circles(g) == [["toolssm.cli", "toolssm.protocol"]]
    assert against_order(g) == [f"toolssm.protocol:2 imports toolssm.cli (up: rank 1 -> {len(LAYERS) - 1})"]


def main() -> int:
    g = graph()
    n_edges = sum(len({d for d, _ in deps}) for deps in g.values())
    print(f"{len(g)} modules, {n_edges} imports between them")
    for m in g:
        print(f"  rank {unit(m)[0]:>2}  {m}")
    cs = circles(g)
    print(f"import circles: {len(cs)}")
    for c in cs:
        print("  " + " <-> ".join(c))
    bad = against_order(g)
    print(f"imports against the order: {len(bad)}")
    for b in bad:
        why = ALLOWED.get(_pair(b))
        print("  " + b + (f"; allowed: {why}" if why else ""))
    mi = model_imports(g)
    print(f"model files importing another architecture: {len(mi)}")
    for b in mi:
        print("  " + b)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
