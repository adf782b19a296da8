"""Exceptions with one-line messages that name the file and the problem."""

from __future__ import annotations


class VoxlocError(Exception):
    """Base class: the message is one line, fit to show a user as is."""


class ConfigError(VoxlocError):
    """A configuration file or sample sheet is invalid."""


class InputError(VoxlocError):
    """An input file (TIFF, shard, table) cannot be used."""
