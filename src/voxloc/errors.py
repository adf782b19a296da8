"""Exceptions with one-line messages that name the file and the problem."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

__all__ = ["VoxlocError", "ConfigError", "InputError", "exit_on_error"]


class VoxlocError(Exception):
    """Base class: the message is one line, fit to show a user as is."""


class ConfigError(VoxlocError):
    """A configuration file or sample sheet is invalid."""


class InputError(VoxlocError):
    """An input file (TIFF, shard, table) cannot be used."""


@contextlib.contextmanager
def exit_on_error(logger: str = "voxloc") -> Iterator[None]:
    """For the workflow's scripts: a :class:`VoxlocError` becomes one line and exit status 1.

    The message goes to the rule log (``logger``, error level) and, as ``voxloc: <message>``,
    to the console: ``sys.__stderr__``, the process's real stderr, which the scripts keep
    when they point ``sys.stderr`` at their log. No traceback: the message names the file
    and the problem. Outputs are written atomically, so none is left half-written; other
    exceptions (bugs) propagate with their traceback into the log.
    """
    try:
        yield
    except VoxlocError as exc:
        logging.getLogger(logger).error("%s", exc)
        print(f"voxloc: {exc}", file=sys.__stderr__, flush=True)
        raise SystemExit(1) from None
