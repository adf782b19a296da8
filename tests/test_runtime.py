"""The rule scripts' common start (voxloc.runtime.rule_script) and what it fixes.

Jobs stopped by SIGTERM or SIGKILL leave no temporary file for ever; permission and
disk-full errors are one line naming the file on the console; every rule log has one
format; a script imports the library of the workflow that runs it, whatever else is on
sys.path; outputs record which source of the library made them. The job-level tests run
small scripts with a stand-in ``snakemake`` object in a subprocess; the workflow-level ones
run the demo and movie_info rules of the tiny config through Snakemake.
"""

from __future__ import annotations

import ast
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import voxloc
from voxloc import locs
from voxloc.errors import exit_on_error, user_message
from voxloc.io import atomic_output, write_yaml
from voxloc.runtime import LOG_FORMAT, SIGTERM_EXIT, temp_files, temp_path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "workflow" / "config.yaml"
#: a line of LOG_FORMAT: time, level, logger, message
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: \S")

#: the first lines of a job: the stand-in snakemake object, then what scripts/*.py do
JOB_HEAD = """\
import sys
from types import SimpleNamespace

snakemake = SimpleNamespace(rule={rule!r}, log=[{log!r}], output={outputs!r}, scriptdir={scriptdir!r})
sys.path.insert(0, {src!r})
from voxloc.runtime import rule_script

rule_script(snakemake)
"""
#: a localize_chunk-like job: streams into an atomic output, slowly
SLOW_WRITER = """
import time

from voxloc.io import atomic_output

with atomic_output(snakemake.output[0]) as tmp, open(tmp, "w") as fh:
    fh.write("half a chunk")
    fh.flush()
    print("writing", flush=True)
    time.sleep(120)
"""


def job(tmp_path: Path, body: str, *, outputs: list[Path], rule: str = "slow_writer", **kw) -> Path:
    fields = {
        "rule": rule,
        "log": str(tmp_path / f"{rule}.log"),
        "outputs": [str(p) for p in outputs],
        "scriptdir": str(ROOT / "scripts"),
        "src": str(ROOT / "src"),
        **kw,
    }
    script = tmp_path / f"{rule}.py"
    script.write_text(JOB_HEAD.format(**fields) + textwrap.dedent(body))
    return script


def start(script: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw
    )


def started_writing(proc: subprocess.Popen, log: Path) -> None:
    line = proc.stdout.readline()
    if line.strip() != "writing":
        proc.kill()
        pytest.fail(f"job did not start writing: {proc.communicate()}, log:\n{log.read_text()}")


def unwritable_dir(path: Path) -> Path:
    """A folder at ``path`` that this process cannot create files in: read-only (mode 555),
    or as root, which ignores modes, a link to /sys (where root gets EACCES too)."""
    if os.geteuid() == 0:
        if sys.platform != "linux":
            pytest.skip("root: no unwritable folder to use")
        path.symlink_to("/sys/kernel")
    else:
        path.mkdir()
        path.chmod(0o555)
    try:
        (path / ".probe").touch()
    except OSError:
        return path
    pytest.skip(f"{path} is writable after all")


# ------------------------------------------------------------ killed jobs


def test_sigterm_during_a_write_removes_its_temporary_file_and_exits_143(tmp_path):
    out = tmp_path / "chunk-0000.parquet"
    proc = start(job(tmp_path, SLOW_WRITER, outputs=[out]))
    started_writing(proc, tmp_path / "slow_writer.log")
    assert [p for p, _ in temp_files(out)] == [temp_path(out, proc.pid)]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == SIGTERM_EXIT == 143
    assert temp_files(out) == [] and not out.exists()
    assert err == ""  # no traceback on the console
    log = (tmp_path / "slow_writer.log").read_text()
    assert "WARNING voxloc.runtime: SIGTERM: stopping" in log and "Traceback" not in log


def test_sigkill_leaves_a_temporary_file_that_the_next_start_of_the_rule_removes(tmp_path):
    out, other = tmp_path / "chunk-0000.parquet", tmp_path / "chunk-0001.parquet"
    proc = start(job(tmp_path, SLOW_WRITER, outputs=[out]))
    started_writing(proc, tmp_path / "slow_writer.log")
    proc.kill()  # SIGKILL, as the out-of-memory killer does: nothing can clean up
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    left = temp_path(out, proc.pid)
    assert left.is_file()
    # not this rule's temporaries: another output's, a name that only looks alike
    others = [temp_path(other, proc.pid), tmp_path / f"{left.name}.keep", tmp_path / f".{out.name}.tmpx"]
    for p in others:
        p.touch()
    live = temp_path(out, os.getpid())  # even a live pid's: no two jobs write one output
    live.touch()
    rerun = subprocess.run(
        [sys.executable, str(job(tmp_path, "", outputs=[out], rule="again"))], capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr
    assert not left.exists() and not live.exists()
    assert all(p.exists() for p in others)
    log = (tmp_path / "again.log").read_text()
    assert f"WARNING voxloc.runtime: removed {left}, left by a job that was killed" in log


def test_atomic_output_removes_the_temporaries_of_dead_writers_only(tmp_path):
    out = tmp_path / "info.yaml"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        temp_path(out, dead.pid).write_text("killed writer")
        temp_path(out, alive.pid).write_text("live writer")
        write_yaml(out, {"n_frames": 12})
        assert [p for p, _ in temp_files(out)] == [temp_path(out, alive.pid)]
    finally:
        alive.kill()
        alive.wait()
    assert out.read_text() == "n_frames: 12\n"


# ------------------------------------------------------- one-line OS errors


def test_unwritable_output_folder_is_one_line_naming_the_output(tmp_path, capfd):
    folder = unwritable_dir(tmp_path / "results")
    with pytest.raises(SystemExit) as stop, exit_on_error():
        write_yaml(folder / "info.yaml", {"n_frames": 12})
    assert stop.value.code == 1
    assert capfd.readouterr().err == f"voxloc: {folder / 'info.yaml'}: permission denied\n"


def test_pyarrow_permission_error_names_the_output_not_its_temporary_file(tmp_path):
    """pyarrow's OSError has no filename, only text naming the temporary file."""
    import pandas as pd

    folder = unwritable_dir(tmp_path / "results")
    with pytest.raises(OSError) as exc:
        locs.write_parquet(folder / "chunk.parquet", pd.DataFrame({"a": [1]}))
    assert user_message(exc.value) == f"{folder / 'chunk.parquet'}: permission denied"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
def test_disk_full_during_a_write_names_the_output(tmp_path):
    out = tmp_path / "movie.tif"
    with pytest.raises(OSError) as exc, atomic_output(out), open("/dev/full", "w") as full:
        full.write("x" * 100_000)
        full.flush()
    assert exc.value.errno == errno.ENOSPC
    assert user_message(exc.value) == f"{out}: no space left on device"
    assert temp_files(out) == []


def test_other_os_errors_are_not_turned_into_one_line():
    assert user_message(OSError(errno.EIO, "Input/output error", "x.tif")) is None
    assert user_message(PermissionError(errno.EACCES, "Permission denied")) is None  # names no file
    assert (
        user_message(OSError(errno.EROFS, "Read-only file system", "x.tif")) == "x.tif: read-only file system"
    )
    with pytest.raises(FileNotFoundError), exit_on_error():
        open("/nonexistent/x.tif")


def test_an_uncaught_input_error_in_a_script_is_one_line(tmp_path):
    """Scripts without exit_on_error (demo_beads, simulate_shard, train_model...) too."""
    body = """
    from voxloc.errors import InputError

    raise InputError("movie.tif: 3 cameras, expected 4")
    """
    proc = subprocess.run(
        [sys.executable, str(job(tmp_path, body, outputs=[], rule="some_rule"))],
        capture_output=True,
        text=True,
    )
    assert (proc.returncode, proc.stderr) == (1, "voxloc: movie.tif: 3 cameras, expected 4\n")
    log = (tmp_path / "some_rule.log").read_text().splitlines()
    assert len(log) == 1 and LOG_LINE.match(log[0]), log
    assert log[0].endswith(" ERROR voxloc: movie.tif: 3 cameras, expected 4")


def test_one_log_format_for_the_library_the_script_and_warnings(tmp_path):
    body = """
    import logging
    import warnings

    logging.getLogger("voxloc.localization.movies").info("movie demo1: 12 frames")
    logging.info("the script's own line")
    warnings.warn("a warning", stacklevel=1)
    """
    proc = subprocess.run(
        [sys.executable, str(job(tmp_path, body, outputs=[], rule="movie_info"))],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    lines = (tmp_path / "movie_info.log").read_text().splitlines()
    assert " INFO voxloc.localization.movies: movie demo1: 12 frames" in lines[0]
    assert " INFO movie_info: the script's own line" in lines[1]  # not "root"
    assert " WARNING py.warnings: " in lines[2]
    assert all(LOG_LINE.match(ln) for ln in lines[:3]), lines
    assert LOG_FORMAT == "%(asctime)s %(levelname)s %(name)s: %(message)s"


# ------------------------------------------------------------ library identity


def test_rule_script_stops_when_voxloc_is_not_the_workflows_own(tmp_path):
    other = tmp_path / "other-checkout"
    (other / "src" / "voxloc").mkdir(parents=True)
    (other / "scripts").mkdir()
    script = job(tmp_path, "print('ran on')", outputs=[], rule="r", scriptdir=str(other / "scripts"))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert proc.returncode == 1 and "ran on" not in proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"voxloc: {ROOT / 'src' / 'voxloc'}: "), lines
    assert f"not from the workflow's own {other / 'src' / 'voxloc'}" in lines[0]


PREAMBLE = [
    "import sys",
    "from pathlib import Path",
    "sys.path.insert(0, str(Path(snakemake.scriptdir).parent / 'src'))",
    "from voxloc.runtime import rule_script",
    "rule_script(snakemake)",
]


@pytest.mark.parametrize("script", sorted((ROOT / "scripts").glob("*.py")), ids=lambda p: p.name)
def test_every_script_starts_with_the_preamble(script):
    """The library path first, then rule_script, before anything else (a new script too)."""
    tree = ast.parse(script.read_text())
    body = tree.body[1:] if ast.get_docstring(tree) is not None else tree.body
    assert [ast.unparse(node) for node in body[: len(PREAMBLE)]] == PREAMBLE


def test_the_runtime_imports_only_the_standard_library():
    """train_model.py sets BLAS thread variables after rule_script, before numpy loads."""
    code = (
        "import sys; before = set(sys.modules); import voxloc.runtime; "
        "print(sorted({m.split('.')[0] for m in set(sys.modules) - before}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert set(ast.literal_eval(out)) - set(sys.stdlib_module_names) == {"voxloc"}


# --------------------------------------------------------------- source id


def git(repo: Path, *args: str) -> str:
    cmd = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="no git")
def test_source_id_is_the_commit_of_a_clean_checkout_else_a_hash(tmp_path):
    repo = tmp_path / "checkout"
    pkg = repo / "src" / "voxloc"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("x = 1\n")
    (pkg / "sub" / "m.py").write_text("y = 2\n")
    (repo / ".gitignore").write_text("__pycache__/\n.venv/\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "one")
    head = git(repo, "rev-parse", "HEAD")
    assert voxloc._clean_commit(pkg) == head
    (pkg / "__pycache__").mkdir()  # ignored, not source: still clean
    (pkg / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"")
    assert voxloc._clean_commit(pkg) == head
    before = voxloc._tree_sha256(pkg)
    (pkg / "sub" / "m.py").write_text("y = 3\n")  # edited
    assert voxloc._clean_commit(pkg) is None
    assert voxloc._tree_sha256(pkg) != before
    git(repo, "checkout", "-q", "--", ".")
    assert voxloc._tree_sha256(pkg) == before
    (pkg / "new.py").write_text("")  # untracked but imported
    assert voxloc._clean_commit(pkg) is None
    (pkg / "new.py").unlink()
    # a copy inside an ignored folder of the checkout (a venv) is not that commit
    venv_copy = repo / ".venv" / "voxloc"
    shutil.copytree(pkg, venv_copy)
    assert voxloc._clean_commit(venv_copy) is None
    assert voxloc._clean_commit(tmp_path) is None  # not a checkout at all


def test_metadata_records_the_source_beside_the_version():
    meta = locs.encode_metadata({"movie": "m1"})
    assert list(meta)[:3] == [b"voxloc_version", b"voxloc_source", b"movie"]
    assert meta[b"voxloc_source"].decode() == voxloc.source_id()
    assert re.fullmatch(r"git:[0-9a-f]{40}|sha256:[0-9a-f]{64}", voxloc.source_id())
    assert voxloc.provenance() == {"voxloc_version": voxloc.__version__, "voxloc_source": voxloc.source_id()}
    # a merge keeps its chunks' values
    assert locs.encode_metadata({"voxloc_source": "git:abc"})[b"voxloc_source"] == b"git:abc"


# ------------------------------------------------------- through Snakemake

OTHER_MARKER = "VOXLOC_OTHER_CHECKOUT_MARKER"
STALE = ["resources/demo/demo1/.camera1.tif.tmp4194301", "resources/demo/demo1/.ground_truth.parquet.tmp1"]


@pytest.fixture(scope="module")
def wf(tmp_path_factory):
    """The tiny config's demo movie demo1 and its movie_info, plus the demo bead stacks into
    an unwritable folder, in one --keep-going run; stale temporary files beside demo1's
    outputs, and another checkout's voxloc first on PYTHONPATH that records its imports."""
    base = tmp_path_factory.mktemp("runtime")
    workdir = base / "wd"
    (workdir / "config").mkdir(parents=True)
    shutil.copy(ROOT / "config" / "movies.tsv", workdir / "config" / "movies.tsv")
    for rel in STALE:
        (workdir / rel).parent.mkdir(parents=True, exist_ok=True)
        (workdir / rel).write_text("left by a killed job")
    beads = unwritable_dir(workdir / "resources" / "demo" / "beads")
    other = base / "other-checkout" / "src"
    shutil.copytree(ROOT / "src" / "voxloc", other / "voxloc", ignore=shutil.ignore_patterns("__pycache__"))
    marker = base / "other-imports.txt"
    with open(other / "voxloc" / "__init__.py", "a") as fh:
        fh.write(f"\nimport os as _os\nopen(_os.environ[{OTHER_MARKER!r}], 'a').write(__file__ + '\\n')\n")
    env = {**os.environ, "PYTHONPATH": str(other), OTHER_MARKER: str(marker)}
    targets = ["results/movies/demo1/info.yaml", "resources/demo/beads/truth.yaml"]
    cmd = [sys.executable, "-m", "snakemake", *targets, "-s", str(ROOT / "Snakefile"), "-d", str(workdir)]
    cmd += ["--cores", "2", "--keep-going", "--configfile", str(TINY)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    return workdir, proc, marker, beads


@pytest.mark.workflow
def test_workflow_jobs_import_the_workflows_own_library(wf):
    workdir, proc, marker, _ = wf
    assert (workdir / "results/movies/demo1/info.yaml").is_file(), (proc.stdout + proc.stderr)[-3000:]
    assert not marker.exists(), f"a job imported the other checkout's voxloc: {marker.read_text()}"
    meta = locs.read_metadata(workdir / "resources/demo/demo1/ground_truth.parquet")
    assert meta["voxloc_version"] == voxloc.__version__
    assert re.fullmatch(r"git:[0-9a-f]{40}|sha256:[0-9a-f]{64}", meta["voxloc_source"])


@pytest.mark.workflow
def test_workflow_job_removes_stale_temporaries_of_its_outputs(wf):
    workdir, proc, _, _ = wf
    assert (workdir / "resources/demo/demo1/ground_truth.parquet").is_file(), proc.stderr[-3000:]
    assert [rel for rel in STALE if (workdir / rel).exists()] == []
    log = (workdir / "logs/demo/demo1.log").read_text()
    assert all(f"removed {rel}, left by a job that was killed" in log for rel in STALE), log


@pytest.mark.workflow
def test_workflow_logs_of_different_rules_share_one_format(wf):
    workdir, proc, _, _ = wf
    logs = ["logs/demo/demo1.log", "logs/localize/demo1/info.log", "logs/demo/beads.log"]
    for rel in logs:
        lines = (workdir / rel).read_text().splitlines()
        assert lines, rel
        assert [ln for ln in lines if not LOG_LINE.match(ln)] == [], rel
    info = (workdir / "logs/localize/demo1/info.log").read_text()
    assert " INFO voxloc.localization.movies: movie demo1: 12 frames" in info


@pytest.mark.workflow
def test_workflow_unwritable_output_is_one_line_on_the_console(wf):
    workdir, proc, _, _ = wf
    assert proc.returncode != 0
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("voxloc: ")]
    assert lines == ["voxloc: resources/demo/beads/camera1.tif: permission denied"]
    log = (workdir / "logs/demo/beads.log").read_text()
    assert log.splitlines()[-1].endswith(" ERROR voxloc: resources/demo/beads/camera1.tif: permission denied")
    assert "Traceback" not in log
