"""The library's house rules (README "Layout"): one subpackage per stage, imported in the
order of the chain, without import circles, with light ``__init__`` files and short modules.

Imports are read with ``ast`` (all of them, also those inside functions and under
``TYPE_CHECKING``: a circle through a type hint is still a circle for a reader).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "voxloc"
#: the chain's stages in import order: a stage may import only earlier ones (and the top level)
STAGES = (
    "physics",
    "calibration",
    "simulation",
    "network",
    "fitting",
    "localization",
    "postprocess",
    "render",
    "evaluation",
)
TOP_LEVEL = {"errors", "io", "types", "config", "voxels", "locs", "exports", "runtime"}
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def voxloc_imports(path: Path) -> set[str]:
    """voxloc modules (not names) imported anywhere in the file."""
    known = modules()
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("voxloc")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("voxloc"):
            for a in node.names:  # ``from voxloc.physics import psf`` imports a module
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in known else node.module)
    return {m for m in out if m != "voxloc"}


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


def test_every_module_lives_in_a_stage_or_the_top_level():
    for name in modules():
        parts = name.split(".")
        if len(parts) == 1:
            continue
        assert parts[1] in STAGES or (len(parts) == 2 and parts[1] in TOP_LEVEL), name


def test_no_stage_imports_a_later_one_and_the_top_level_imports_no_stage():
    bad = []
    for name, path in modules().items():
        mine = stage_of(name)
        rank = STAGES.index(mine) if mine else -1  # the top level imports no stage
        for imp in voxloc_imports(path):
            theirs = stage_of(imp)
            if theirs is None:
                continue
            if STAGES.index(theirs) > rank:
                bad.append(f"{name} imports {imp}")
    assert not bad, bad


def test_no_import_circle():
    graph = {name: voxloc_imports(path) & modules().keys() for name, path in modules().items()}
    graph = {n: {m for m in deps if not n.startswith(m + ".") and m != n} for n, deps in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        for m in graph.get(n, ()):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m) :] + [m] if m in stack else [n, m])
            elif m not in state:
                visit(m, stack + [m])
        state[n] = 2

    for n in graph:
        if n not in state:
            visit(n, [n])
    assert not cycles, cycles


@pytest.mark.parametrize("stage", STAGES)
def test_subpackage_init_imports_nothing(stage):
    tree = ast.parse((SRC / stage / "__init__.py").read_text())
    assert ast.get_docstring(tree), f"{stage}/__init__.py: say what the stage holds"
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]


def test_modules_are_short_or_say_why():
    long = []
    for name, path in modules().items():
        n = len(path.read_text().splitlines())
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if n > MAX_LINES and "longer than" not in doc:
            long.append(f"{name}: {n} lines")
    assert not long, long


def test_the_check_finds_a_circle_and_a_backward_import(tmp_path, monkeypatch):
    """The checks can fail: a fake tree with physics importing evaluation and back."""
    pkg = tmp_path / "voxloc"
    for stage in ("physics", "evaluation"):
        (pkg / stage).mkdir(parents=True)
        (pkg / stage / "__init__.py").write_text('"""x"""\n')
    (pkg / "__init__.py").write_text("")
    (pkg / "physics" / "psf.py").write_text("from voxloc.evaluation import matching\n")
    (pkg / "evaluation" / "matching.py").write_text("from voxloc.physics.psf import x\n")
    monkeypatch.setitem(globals(), "SRC", pkg)
    with pytest.raises(AssertionError, match="physics.psf imports voxloc.evaluation.matching"):
        test_no_stage_imports_a_later_one_and_the_top_level_imports_no_stage()
    with pytest.raises(AssertionError, match="voxloc.physics.psf"):
        test_no_import_circle()
