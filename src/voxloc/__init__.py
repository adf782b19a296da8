"""voxloc: 3D SMLM for quad-plane microscopes by voxel-wise regression (Aritake et al. 2020)."""

from __future__ import annotations

import functools
import hashlib
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

try:
    __version__ = version("voxloc")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.1.0+src"

__all__ = ["__version__", "source_id", "provenance"]


def _git(package: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", "-C", str(package), *args], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.SubprocessError):  # no git, or it hung
        return None
    return proc.stdout if proc.returncode == 0 else None


def _clean_commit(package: Path) -> str | None:
    """HEAD of the git checkout that tracks ``package``, when none of its .py files differs
    from it (modified, staged, untracked or ignored); else None."""
    if _git(package, "ls-files", "--error-unmatch", "--", "__init__.py") is None:
        return None  # not in a git checkout, or not tracked there (e.g. a venv inside one)
    status = _git(package, "status", "--porcelain=v1", "--untracked-files=all", "--ignored", "--", ".")
    head = _git(package, "rev-parse", "--verify", "HEAD")
    if status is None or head is None:
        return None
    if any(line.rstrip().rstrip('"').endswith(".py") for line in status.splitlines()):
        return None
    return head.strip()


def _tree_sha256(package: Path) -> str:
    """SHA-256 over the package's .py files: each one's path (relative, POSIX) and bytes."""
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py"), key=lambda p: p.relative_to(package).as_posix()):
        h.update(path.relative_to(package).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


@functools.cache
def source_id() -> str:
    """Which source of the library this process runs: ``git:<commit>`` when it is a clean git
    checkout, else ``sha256:<hash of src/voxloc/**/*.py>``. Computed once per process.

    ``__version__`` alone does not tell two checkouts (or an edited one) apart.
    """
    package = Path(__file__).resolve().parent
    commit = _clean_commit(package)
    return f"git:{commit}" if commit else f"sha256:{_tree_sha256(package)}"


def provenance() -> dict[str, str]:
    """``voxloc_version`` and ``voxloc_source`` (:func:`source_id`), for outputs' metadata."""
    return {"voxloc_version": __version__, "voxloc_source": source_id()}
