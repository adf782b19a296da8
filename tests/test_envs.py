"""The conda environments of the rules (envs/*.yaml), checked without reaching a conda channel.

Each env file parses and pins every package; every rule names an env and a log; and each
env lists every third-party package that its rules import: the rules' scripts are found by
parsing workflow/rules/*.smk (``conda:`` and ``script:``), their imports are followed with
``ast`` into the voxloc modules they import (transitively, leaving out ``if TYPE_CHECKING:``
blocks), and import names are mapped to package names.
"""

from __future__ import annotations

import ast
import re
import shutil
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
RULE_FILES = [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]
ENVS = sorted((ROOT / "envs").glob("*.yaml"))

#: import name -> the conda-forge (or PyPI, in an env's pip section) packages that provide it
PACKAGES = {
    "numpy": {"numpy"},
    "scipy": {"scipy"},
    "pandas": {"pandas"},
    "pyarrow": {"pyarrow"},
    "h5py": {"h5py"},
    "tifffile": {"tifffile"},
    "skimage": {"scikit-image"},
    "yaml": {"pyyaml"},
    "jsonschema": {"jsonschema"},
    "matplotlib": {"matplotlib", "matplotlib-base"},
    "PIL": {"pillow"},
    "tqdm": {"tqdm"},
    "torch": {"pytorch", "torch"},
    "psfmodels": {"psfmodels"},
    "numba": {"numba"},
}
#: pyproject.toml distribution name -> its name in the env files, where they differ
PYPROJECT_NAMES = {"matplotlib": "matplotlib-base"}
#: env -> modules that its rules' voxloc modules import only inside functions that those rules
#: never call: they load without it
#: (none since the stage subpackages: the CPU env's rules reach no module that imports torch)
LAZY_ONLY: dict[str, set[str]] = {}
#: modules a rule script gets from Snakemake or the workflow, not from its env
PROVIDED = {"voxloc", "snakemake"}
ACTIONS = {"script", "shell", "run", "wrapper", "notebook"}

RULE_HEAD = re.compile(r"^(?:rule|checkpoint)\s+(\w+)\s*:", re.M)
DIRECTIVE = re.compile(r"^ {4}(\w+):\s*(.*)$")
#: an exact conda spec: name=1.2.3 or name==1.2.3, optionally =build (no ranges, no wildcards)
CONDA_PIN = re.compile(r"^(?:[\w.-]+::)?([A-Za-z0-9_.-]+)\s*==?\s*(\d+(?:\.\d+)+)(?:=\S+)?$")
PIP_PIN = re.compile(r"^([A-Za-z0-9_.-]+)\s*==\s*(\d+(?:\.\d+)+(?:\+[\w.]+)?)$")


# ------------------------------------------------------------------ rules and env files


def parse_rules(path: Path) -> dict[str, dict[str, list[str]]]:
    """Rules and checkpoints of a snakefmt-formatted file: name -> directive -> its string
    literals (``conda``, ``script``, ``log``, ...)."""
    text = path.read_text()
    heads = list(RULE_HEAD.finditer(text))
    rules = {}
    for head, nxt in zip(heads, [*heads[1:], None], strict=False):
        body = text[head.end() : nxt.start() if nxt else len(text)].splitlines()[1:]
        directives: dict[str, list[str]] = {}
        current = None
        for line in body:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if not line.startswith(" "):  # back at the top level: the rule has ended
                break
            m = DIRECTIVE.match(line)
            if m:
                current = m.group(1)
                directives[current] = re.findall(r'"([^"]*)"', m.group(2))
            elif current is not None:
                directives[current] += re.findall(r'"([^"]*)"', line)
        rules[head.group(1)] = directives
    return rules


def all_rules(files: list[Path] = RULE_FILES) -> dict[str, tuple[Path, dict[str, list[str]]]]:
    """Every rule of the workflow: name -> (file that defines it, directives)."""
    return {name: (f, d) for f in files for name, d in parse_rules(f).items()}


def scripts_by_env(files: list[Path] = RULE_FILES) -> dict[Path, dict[str, Path]]:
    """env file -> {rule name: its script} for the rules that name both."""
    out: dict[Path, dict[str, Path]] = {}
    for name, (path, d) in all_rules(files).items():
        if d.get("conda") and d.get("script"):
            env = (path.parent / d["conda"][0]).resolve()
            out.setdefault(env, {})[name] = (path.parent / d["script"][0]).resolve()
    return out


def env_specs(path: Path) -> tuple[list[str], list[str]]:
    """The conda dependency specs and the pip section's requirements of an env file."""
    doc = yaml.safe_load(path.read_text())
    conda, pip = [], []
    for dep in doc["dependencies"]:
        if isinstance(dep, dict):
            pip += [str(r) for r in dep["pip"] if not str(r).startswith("-")]
        else:
            conda.append(str(dep))
    return conda, pip


def unpinned(path: Path) -> list[str]:
    """Specs of an env file that do not name one release."""
    conda, pip = env_specs(path)
    return [s for s in conda if not CONDA_PIN.match(s)] + [s for s in pip if not PIP_PIN.match(s)]


def env_versions(path: Path) -> dict[str, str]:
    """Package name (lower case) -> pinned version, conda and pip sections together."""
    conda, pip = env_specs(path)
    pins = [CONDA_PIN.match(s) for s in conda] + [PIP_PIN.match(s) for s in pip]
    return {m.group(1).lower(): m.group(2) for m in pins if m}


# ------------------------------------------------------------------------- imports


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(node: ast.AST, lazy: bool) -> Iterator[ast.AST]:
    """ast.walk without the bodies of ``if TYPE_CHECKING:`` (imports only for type hints);
    without function bodies too unless ``lazy`` (imports that run only when called)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.orelse:
                yield stmt
                yield from _runtime_nodes(stmt, lazy)
            continue
        if not lazy and isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        yield child
        yield from _runtime_nodes(child, lazy)


def imported_names(path: Path, package: str | None = None, lazy: bool = True) -> set[str]:
    """Dotted names a file imports at run time (``lazy``: in function bodies too);
    ``from a import b`` gives ``a`` and ``a.b`` (b may be a submodule). ``package`` resolves
    relative imports."""
    names = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path)), lazy):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = (package or "").split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names |= {f"{base}.{a.name}" for a in node.names}
    return names


def library_file(module: str, src: Path = SRC) -> Path | None:
    """The source file of a voxloc module (or package), None when ``module`` is not one."""
    base = src.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def third_party_imports(script: Path, src: Path = SRC, lazy: bool = True) -> dict[str, set[str]]:
    """Top-level third-party modules a rule script needs at run time, following its voxloc
    imports transitively: module name -> the files that import it. ``lazy=False``: only the
    imports that run when the modules are imported (not those inside functions)."""
    needed: dict[str, set[str]] = {}
    todo, seen = [(script, None)], set()
    while todo:
        path, package = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_names(path, package, lazy):
            top = name.split(".")[0]
            if top == "voxloc":
                parts = name.split(".")
                for i in range(1, len(parts) + 1):  # a submodule imports its packages first
                    module = ".".join(parts[:i])
                    file = library_file(module, src)
                    if file is not None:
                        pkg = module if file.name == "__init__.py" else module.rpartition(".")[0]
                        todo.append((file, pkg))
            elif top and top not in sys.stdlib_module_names and top not in PROVIDED:
                needed.setdefault(top, set()).add(str(path.relative_to(path.parents[1])))
    return needed


def missing_packages(env: Path, scripts: dict[str, Path], lazy: bool = True) -> dict[str, str]:
    """Third-party imports of the scripts that ``env`` does not provide: module -> why."""
    have = set(env_versions(env)) | {s.split("=")[0].lower() for s in env_specs(env)[0]}
    missing = {}
    for rule, script in sorted(scripts.items()):
        for module, files in sorted(third_party_imports(script, lazy=lazy).items()):
            if module not in PACKAGES:
                missing[module] = f"unknown import name (add it to PACKAGES), from {sorted(files)}"
            elif not PACKAGES[module] & have:
                missing[module] = f"rule {rule}: {sorted(PACKAGES[module])}, imported by {sorted(files)}"
    return missing


# --------------------------------------------------------------------------- tests


def test_rule_files_are_found_and_parsed():
    rules = all_rules()
    assert {"movie_info", "localize_chunk", "merge_localizations", "train_model", "render_movie"} <= set(
        rules
    )
    heads = sum(len(RULE_HEAD.findall(f.read_text())) for f in RULE_FILES)
    assert len(rules) == heads  # no rule defined twice or lost by the parser
    _, chunk = rules["localize_chunk"]
    assert chunk["conda"] == ["../../envs/voxloc-torch.yaml"]
    assert chunk["script"] == ["../../scripts/localize_chunk.py"]
    assert chunk["log"] == ["logs/localize/{movie}/chunk-{chunk}.log"]


def test_every_rule_names_a_conda_env_and_a_log():
    for name, (path, d) in all_rules().items():
        if not ACTIONS & set(d):  # a target rule such as `all`: no job runs
            continue
        assert d.get("log"), f"{path.name}: rule {name} has no log"
        assert d.get("conda"), f"{path.name}: rule {name} has no conda env"
        env = (path.parent / d["conda"][0]).resolve()
        assert env.is_file() and env.parent == ROOT / "envs", f"rule {name}: {env}"
        assert "script" in d, f"rule {name}: rule code belongs in a script (scripts/)"


def test_every_env_is_used_and_scripts_exist():
    used = scripts_by_env()
    assert set(used) == set(ENVS)
    for scripts in used.values():
        for script in scripts.values():
            assert script.is_file(), script


@pytest.mark.parametrize("env", ENVS, ids=lambda p: p.name)
def test_env_file_parses_and_pins_every_package(env):
    doc = yaml.safe_load(env.read_text())
    assert set(doc) == {"channels", "dependencies"}
    assert doc["channels"][0] == "conda-forge" and "nodefaults" in doc["channels"]
    conda, pip = env_specs(env)
    assert any(s.startswith("python=") for s in conda)
    assert unpinned(env) == []
    if pip:
        assert any(s.startswith("pip=") for s in conda), "a pip section needs pip pinned"
    assert not list(ROOT.glob("envs/*.post-deploy.sh")), "see envs/voxloc.yaml: no install step"


@pytest.mark.parametrize("env", ENVS, ids=lambda p: p.name)
def test_env_lists_every_package_its_rules_import(env):
    scripts = scripts_by_env()[env]
    # everything imported when the modules load, with no exception
    assert missing_packages(env, scripts, lazy=False) == {}
    # and everything imported inside functions too, but for the documented lazy imports
    missing = missing_packages(env, scripts, lazy=True)
    assert set(missing) <= set(LAZY_ONLY.get(env.name, {})), missing


def test_lazy_exceptions_are_still_needed():
    """Each LAZY_ONLY entry is imported by some rule of its env inside a function only."""
    for env_name, modules in LAZY_ONLY.items():
        scripts = scripts_by_env()[ROOT / "envs" / env_name]
        for module in modules:
            assert any(module in third_party_imports(s) for s in scripts.values()), module


def test_cpu_env_covers_rendering_and_the_torch_env_has_torch():
    needed = {
        env.name: {m for s in scripts.values() for m in third_party_imports(s)}
        for env, scripts in scripts_by_env().items()
    }
    assert {"numpy", "pandas", "tifffile", "matplotlib"} <= needed["voxloc.yaml"]
    assert {"torch", "numpy"} <= needed["voxloc-torch.yaml"]


def test_pins_agree_across_envs_and_with_pyproject():
    versions = {env.name: env_versions(env) for env in ENVS}
    cpu, torch_env = versions["voxloc.yaml"], versions["voxloc-torch.yaml"]
    for name in set(cpu) & set(torch_env):
        assert cpu[name] == torch_env[name], name
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    requirements += [Requirement(r) for r in project["optional-dependencies"]["torch"]]
    python = project["requires-python"]
    for env, pins in versions.items():
        assert Requirement(f"python{python}").specifier.contains(pins["python"] + ".0"), env
        for req in requirements:
            name = PYPROJECT_NAMES.get(req.name, req.name).lower()
            if name in pins:
                assert req.specifier.contains(pins[name]), f"{env}: {name}={pins[name]} vs {req}"
    # the CPU env holds every run-time dependency of the library
    assert set(cpu) >= {PYPROJECT_NAMES.get(r.name, r.name).lower() for r in requirements[:-1]}


def test_import_scan_follows_the_library_and_skips_type_checking(tmp_path):
    src = tmp_path / "src"
    (src / "voxloc").mkdir(parents=True)
    (src / "voxloc" / "__init__.py").write_text("from importlib.metadata import version\n")
    (src / "voxloc" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nfrom . import b\nimport numpy as np\n"
        "if TYPE_CHECKING:\n    import torch\nelse:\n    import yaml\n"
    )
    (src / "voxloc" / "b.py").write_text("def f():\n    from skimage import measure\n")
    script = tmp_path / "scripts" / "x.py"
    script.parent.mkdir()
    script.write_text("import logging\nfrom voxloc import a  # noqa\n")
    assert set(third_party_imports(script, src)) == {"numpy", "yaml", "skimage"}


def test_check_fails_when_a_dependency_is_removed(tmp_path):
    """The check can fail: a copy of an env without a package its rules import."""
    env = ROOT / "envs" / "voxloc.yaml"
    scripts = scripts_by_env()[env]
    for dropped, module in (
        ("scikit-image", "skimage"),
        ("pyyaml", "yaml"),
        ("matplotlib-base", "matplotlib"),
    ):
        copy = tmp_path / f"without-{dropped}.yaml"
        lines = [ln for ln in env.read_text().splitlines() if not ln.strip().startswith(f"- {dropped}=")]
        copy.write_text("\n".join(lines) + "\n")
        assert len(lines) == len(env.read_text().splitlines()) - 1
        missing = missing_packages(copy, scripts)
        assert set(missing) - LAZY_ONLY.get("voxloc.yaml", set()) == {module}, missing
        assert dropped in missing[module]
    torch_env = tmp_path / "no-torch.yaml"
    shutil.copy(ROOT / "envs" / "voxloc-torch.yaml", torch_env)
    torch_env.write_text(torch_env.read_text().replace("- torch==2.13.0", "- tqdm==4.67.1"))
    assert set(
        missing_packages(torch_env, scripts_by_env()[ROOT / "envs" / "voxloc-torch.yaml"], lazy=False)
    ) == {"torch"}


def test_unpinned_specs_are_reported(tmp_path):
    env = tmp_path / "loose.yaml"
    env.write_text(
        "channels: [conda-forge]\ndependencies:\n  - python=3.11\n  - numpy>=2\n  - scipy\n"
        "  - pandas=2.*\n  - h5py=3.15.1\n  - pip:\n      - torch\n      - tqdm==4.67.1\n"
    )
    assert unpinned(env) == ["numpy>=2", "scipy", "pandas=2.*", "torch"]


# ------------------------------------------- --use-conda with a stand-in for conda

#: enough of conda's command line for Snakemake's --use-conda: `env create` makes a bare
#: venv (no voxloc, no numpy) whose python records that it ran
FAKE_CONDA = r"""#!/usr/bin/env bash
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
case "$1" in
  --version) echo "conda 25.1.1" ;;
  info) printf '{"conda_prefix": "%s", "platform": "linux-64"}\n' "$root" ;;
  config) echo '{"get": {"channel_priority": "strict"}}' ;;
  clean) ;;
  env)
    prefix=""; file=""
    while [ $# -gt 0 ]; do
      case "$1" in --prefix) prefix="$2"; shift ;; --file) file="$2"; shift ;; esac; shift
    done
    echo "create $file" >> "$root/calls.log"
    "$BASE_PYTHON" -m venv --without-pip "$prefix"
    mv "$prefix/bin/python" "$prefix/bin/python-real"
    printf '#!/usr/bin/env bash\necho "python $*" >> "%s/calls.log"\nexec "%s/bin/python-real" "$@"\n' \
      "$root" "$prefix" > "$prefix/bin/python"
    chmod +x "$prefix/bin/python" ;;
  *) echo "fake conda: $*" >&2; exit 1 ;;
esac
"""
ACTIVATE = 'export PATH="$1/bin:$PATH"; export CONDA_PREFIX="$1"\n'


@pytest.mark.workflow
def test_use_conda_job_imports_the_checkouts_library_without_installing_it(tmp_path):
    """A rule job under --use-conda runs its script with the env's python, which has no voxloc
    installed, and imports the library of this checkout all the same: Snakemake appends its
    own sys.path, where common.smk put src/, to the script's (it blocks PYTHONPATH for conda
    jobs). The other modules come from the env or, as here, that same fallback."""
    import os
    import subprocess

    conda_root = tmp_path / "conda"
    (conda_root / "bin").mkdir(parents=True)
    (conda_root / "bin" / "conda").write_text(FAKE_CONDA)
    (conda_root / "bin" / "conda").chmod(0o755)
    (conda_root / "bin" / "activate").write_text(ACTIVATE)
    work = tmp_path / "work"
    (work / "config").mkdir(parents=True)
    shutil.copy(ROOT / "config" / "movies.tsv", work / "config" / "movies.tsv")
    env = dict(os.environ)
    env["PATH"] = f"{conda_root / 'bin'}{os.pathsep}{env['PATH']}"
    env["BASE_PYTHON"] = str(Path(sys.base_prefix) / "bin" / "python3")
    target = "resources/demo/beads/truth.yaml"  # rule demo_beads: voxloc.simulation.demo, numpy, tifffile
    cmd = [sys.executable, "-m", "snakemake", target, "-s", str(ROOT / "Snakefile"), "-d", str(work)]
    cmd += ["--cores", "1", "--sdm", "conda", "--conda-prefix", str(tmp_path / "envs")]
    cmd += ["--configfile", str(ROOT / "tests" / "workflow" / "config.yaml")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert (work / target).is_file()
    calls = (conda_root / "calls.log").read_text().splitlines()
    assert [c for c in calls if c.startswith("create ")] == [
        f"create {p}" for p in sorted((tmp_path / "envs").glob("*.yaml"))
    ]
    scripts = [c for c in calls if c.startswith("python ") and "demo_beads.py" in c]
    assert len(scripts) == 1, calls  # the rule's script ran in the env's python
    assert not list((tmp_path / "envs").rglob("site-packages/voxloc*")), "voxloc was installed"
