"""Exceptions with one-line messages that name the file and the problem."""

from __future__ import annotations

import contextlib
import errno
import logging
import re
import sys
from collections.abc import Iterator

__all__ = [
    "VoxlocError",
    "ConfigError",
    "InputError",
    "os_problem",
    "user_message",
    "tell_user",
    "exit_on_error",
]


class VoxlocError(Exception):
    """Base class: the message is one line, fit to show a user as is."""


class ConfigError(VoxlocError):
    """A configuration file or sample sheet is invalid."""


class InputError(VoxlocError):
    """An input file (TIFF, shard, table) cannot be used."""


#: errno -> the problem, for OSErrors that are the user's to fix, not bugs: no traceback
OS_PROBLEMS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
}
#: pyarrow and h5py give no errno attribute at times, only the text ("[errno 13] ...", "errno = 28")
_ERRNO_TEXT = re.compile(r"errno\s*=?\s*(\d+)", re.IGNORECASE)


def os_problem(exc: OSError) -> str | None:
    """The problem of a permission, read-only or disk-full OSError (:data:`OS_PROBLEMS`),
    from its errno or, failing that, its message; None for any other OSError."""
    code = exc.errno
    if code is None:
        m = _ERRNO_TEXT.search(str(exc))
        code = int(m.group(1)) if m else None
    return OS_PROBLEMS.get(code)


def user_message(exc: BaseException) -> str | None:
    """The one-line message for the user of an exception that is the user's to fix: a
    :class:`VoxlocError`, or an OSError of :data:`OS_PROBLEMS` that names its file
    (``<path>: permission denied``); None for anything else (a bug: keep the traceback)."""
    if isinstance(exc, VoxlocError):
        return str(exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        problem = os_problem(exc)
        if problem is not None:
            return f"{exc.filename}: {problem}"
    return None


def tell_user(message: str, logger: str = "voxloc") -> None:
    """A one-line problem for the user: into the rule log (``logger``, error level) and, as
    ``voxloc: <message>``, on the console (``sys.__stderr__``, the process's real stderr,
    which the scripts keep when they point ``sys.stderr`` at their log)."""
    logging.getLogger(logger).error("%s", message)
    # one write of the whole line: with an unbuffered stderr (python -u, PYTHONUNBUFFERED)
    # print() writes the text and the newline apart, and Snakemake's own lines, written to
    # the same console by a parallel process, could land between them
    sys.__stderr__.write(f"voxloc: {message}\n")
    sys.__stderr__.flush()


@contextlib.contextmanager
def exit_on_error(logger: str = "voxloc") -> Iterator[None]:
    """For the workflow's scripts: a :class:`VoxlocError`, or a permission or disk-full
    OSError naming its file (:func:`user_message`), becomes one line and exit status 1.

    The message goes to the rule log (``logger``, error level) and, as ``voxloc: <message>``,
    to the console: ``sys.__stderr__``, the process's real stderr, which the scripts keep
    when they point ``sys.stderr`` at their log. No traceback: the message names the file
    and the problem. Outputs are written atomically, so none is left half-written; other
    exceptions (bugs) propagate with their traceback into the log.
    """
    try:
        yield
    except (VoxlocError, OSError) as exc:
        message = user_message(exc)
        if message is None:
            raise
        tell_user(message, logger)
        raise SystemExit(1) from None
