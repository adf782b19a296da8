"""The start of every rule job: :func:`rule_script`, called by the first lines of scripts/*.py.

A rule script begins with::

    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # this workflow's library
    from voxloc.runtime import rule_script

    rule_script(snakemake)

The ``sys.path`` line must come before any voxloc import, so it cannot live in the library:
Snakemake appends its own ``sys.path`` (where common.smk put the workflow's ``src/``) after
the script's, so without it an installed voxloc (say an editable install of another
checkout in the same venv) would be imported instead of the workflow's. It needs nothing
but the standard library, so it works in the rules' conda envs too, where voxloc is not
installed. :func:`rule_script` then

* points ``sys.stderr`` at the rule's log (line-buffered): logs, progress bars, tracebacks;
* configures logging once, in one format for every rule (:data:`LOG_FORMAT`: time, level,
  logger; records of the script's own ``logging.info`` carry the rule's name);
* prints a :class:`~voxloc.errors.VoxlocError`, or a permission or disk-full error naming a
  file, that nothing caught as one line ``voxloc: <path>: <problem>`` on the console and in
  the log (as :func:`~voxloc.errors.exit_on_error` does), exit status 1;
* turns SIGTERM (SLURM's time limit, preemption, Snakemake stopping) into
  :class:`Terminated`, which unwinds through :func:`voxloc.io.atomic_output`, so the
  half-written temporary file is removed, and exits with status 143 (128 + SIGTERM);
* removes temporary files of the rule's outputs left by a job that was killed (SIGKILL,
  out of memory), which nothing else would ever remove: Snakemake never runs two jobs for
  the same output, so every such file is stale when the job starts;
* stops with one line when the imported voxloc is not the workflow's own ``src/voxloc``.

This module is a top-level one beside :mod:`voxloc.errors` because it is about the process
(stderr, logging, signals, ``sys.path``) rather than any stage, and because it imports only
the standard library: ``scripts/train_model.py`` sets BLAS thread variables after it, which
must happen before numpy loads. The naming of atomic outputs' temporary files lives here too
(:func:`temp_path`), for the same reason; :mod:`voxloc.io` uses it.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import voxloc
from voxloc.errors import tell_user, user_message

T = TypeVar("T")

__all__ = [
    "LOG_FORMAT",
    "limit_heap_fragmentation",
    "set_compute_threads",
    "prefetched",
    "SIGTERM_EXIT",
    "Terminated",
    "temp_path",
    "temp_files",
    "remove_stale_temps",
    "configure_logging",
    "install_sigterm_handler",
    "check_library",
    "rule_script",
]

log = logging.getLogger(__name__)

#: every rule log's line format: time, level, logger (module), message
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: exit status of a job stopped by SIGTERM, as the shell reports a process killed by it
SIGTERM_EXIT = 128 + signal.SIGTERM


# ------------------------------------------------------------- temporary files


def temp_path(path: str | Path, pid: int | None = None) -> Path:
    """The temporary file of :func:`voxloc.io.atomic_output` for ``path``, written by process
    ``pid`` (default: this one): ``.<name>.tmp<pid>`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid() if pid is None else pid}")


def temp_files(path: str | Path) -> list[tuple[Path, int]]:
    """The temporary files of ``path`` that exist, with the pid of their writer."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.tmp(\d+)")
    try:
        entries = list(os.scandir(path.parent))
    except (FileNotFoundError, NotADirectoryError, PermissionError):  # no folder, or not listable
        return []
    found = []
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if m:
            found.append((path.parent / entry.name, int(m.group(1))))
    return sorted(found)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    except (OverflowError, ValueError):  # no process has such a pid
        return False
    return True


def remove_stale_temps(path: str | Path, *, dead_only: bool = True) -> list[Path]:
    """Remove the temporary files of ``path`` left by killed writers; returns them.

    With ``dead_only`` (:func:`voxloc.io.atomic_output` before each write) only those whose
    writer pid is not a live process on this machine; without it (a rule job's own outputs
    when it starts) all but this process's own. One that cannot be removed (a folder not
    writable) is left: writing there fails next, and says so.
    """
    removed = []
    for tmp, pid in temp_files(path):
        if pid == os.getpid() or (dead_only and _pid_alive(pid)):
            continue
        if tmp.is_dir() and not tmp.is_symlink():
            continue  # atomic_output's temporaries are files
        try:
            tmp.unlink()
        except (FileNotFoundError, PermissionError):
            continue
        removed.append(tmp)
    return removed


# ------------------------------------------------------------------- logging


class _ScriptRecords(logging.Filter):
    """Records of the root logger (a script's ``logging.info``) are named after the rule."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.rule = name

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "root":
            record.name = self.rule
        return True


def configure_logging(stream: Any = None, *, rule: str | None = None, level: int = logging.INFO) -> None:
    """One handler on the root logger, writing :data:`LOG_FORMAT` to ``stream`` (default
    ``sys.stderr``); earlier handlers are replaced, and Python warnings are logged too."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    if rule:
        handler.addFilter(_ScriptRecords(rule))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.captureWarnings(True)


def _excepthook(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
    """An exception nothing caught: one line for a user's problem (bad input, permission,
    disk full), else the traceback into the log."""
    message = user_message(exc) if isinstance(exc, Exception) else None
    if message is None:
        logging.getLogger("voxloc").critical("uncaught exception", exc_info=(kind, exc, tb))
        return
    tell_user(message)


# ------------------------------------------------------------------- SIGTERM


class Terminated(SystemExit):
    """SIGTERM arrived: the job stops, with status :data:`SIGTERM_EXIT`.

    A :class:`SystemExit`, so ``except Exception`` blocks do not catch it, no traceback is
    printed, and ``with``/``finally`` blocks (:func:`voxloc.io.atomic_output`) clean up on
    the way out.
    """


def _on_sigterm(signum: int, frame: Any) -> None:
    # a second SIGTERM must not interrupt the clean-up of the first; SIGKILL still ends it
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    log.warning("SIGTERM: stopping; the outputs being written are removed (exit %d)", SIGTERM_EXIT)
    raise Terminated(SIGTERM_EXIT)


def install_sigterm_handler() -> None:
    """Raise :class:`Terminated` in the main thread on SIGTERM (no-op in other threads).

    Training replaces it while it runs (:mod:`voxloc.network.train`: finish the step, write
    the checkpoint, then stop) and restores it afterwards.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


# ------------------------------------------------------------ library identity


def check_library(workflow_dir: str | Path) -> None:
    """Stop (one line, status 1) when the imported voxloc is not ``<workflow_dir>/src/voxloc``.

    Nothing to check when the workflow has no ``src/voxloc`` (a script run from elsewhere).
    """
    expected = Path(workflow_dir) / "src" / "voxloc"
    if not expected.is_dir():
        return
    actual = Path(voxloc.__file__).resolve().parent
    if actual != expected.resolve():
        message = (
            f"{actual}: the rule script imported voxloc from here, not from the workflow's own "
            f"{expected} (put the workflow's src/ first on sys.path, as the scripts' first lines do)"
        )
        tell_user(message)
        raise SystemExit(1)


# ------------------------------------------------------------------ the preamble


def _paths(files: Iterable[Any]) -> list[Path]:
    return [Path(str(f)) for f in files]


def rule_script(snakemake: Any) -> logging.Logger:
    """Set up a rule job (see the module doc); returns the logger named after the rule.

    ``snakemake`` is the script's ``snakemake`` object: ``log``, ``output``, ``rule`` and
    ``scriptdir`` are used.
    """
    rule = str(getattr(snakemake, "rule", None) or "rule")
    logs = _paths(getattr(snakemake, "log", []) or [])
    if logs:
        logs[0].parent.mkdir(parents=True, exist_ok=True)
        sys.stderr = open(logs[0], "w", buffering=1, encoding="utf-8", errors="backslashreplace")
    configure_logging(sys.stderr, rule=rule)
    sys.excepthook = _excepthook
    install_sigterm_handler()
    scriptdir = getattr(snakemake, "scriptdir", None)
    if scriptdir:
        check_library(Path(scriptdir).parent)
    for output in _paths(getattr(snakemake, "output", []) or []):
        for tmp in remove_stale_temps(output, dead_only=False):
            log.warning("removed %s, left by a job that was killed", tmp)
    return logging.getLogger(rule)


# ------------------------------------------------------------------ threads


def set_compute_threads(threads: int | None) -> None:
    """The threads of a job's compute (a rule's ``threads``): torch's intra-op threads (the
    network) and numba's (the per-molecule fit, :mod:`voxloc.fitting`), so that jobs side by
    side do not each take every core (torch only once imported: a job that runs no network
    does not load it). None leaves both at their defaults."""
    if not threads:
        return
    import numba

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(max(1, int(threads)))
    numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))


def prefetched(items: Iterable[T], depth: int) -> Iterator[T]:
    """Iterate ``items`` in a background thread, up to ``depth`` items ahead (0: in this thread).

    Reading and registering the next batches (numpy, which releases the GIL) then overlaps the
    network. The queue is bounded, so memory stays flat; an exception in the thread is raised
    here, and leaving the loop early stops the thread.
    """
    if depth <= 0:
        yield from items
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def work() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((done, None))
        except BaseException as exc:  # handed to the consumer, re-raised there
            q.put((done, exc))

    thread = threading.Thread(target=work, name="voxloc-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)


# ------------------------------------------------------------------ memory


def limit_heap_fragmentation() -> None:
    """Pin glibc's mmap threshold at 64 MiB: one batch's arrays (the network's activations
    for 8 frames of 256 x 256 x 4 take 32-64 MiB) are reused from the heap, larger ones are
    mapped and unmapped. No-op off glibc.

    A chunk once grew to 10 GB on a 30,000-frame movie: it kept every batch's table, and
    those small long-lived blocks between the heap's batch arrays kept freed space from
    returning to the system. Tables are now streamed out batch by batch, so nothing
    long-lived sits between them. The threshold was then pinned at 1 MiB, which mapped and
    faulted in every array afresh each batch and cost 35-40 % of the CPU speed (54 against
    88-94 frames/s; glibc's own dynamic threshold gave 75-86) for 0.1 GB less memory.
    """
    import ctypes
    import ctypes.util

    libc_name = ctypes.util.find_library("c")
    if sys.platform.startswith("linux") and libc_name:
        try:
            ctypes.CDLL(libc_name).mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD
        except (OSError, AttributeError):
            pass
