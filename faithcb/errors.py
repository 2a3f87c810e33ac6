"""Exception hierarchy. Each class also inherits the builtin it refines, so callers can catch either."""

from __future__ import annotations


class FaithcbError(Exception):
    """Base class for every error faithcb raises on purpose."""


class ProblemFormatError(FaithcbError, ValueError):
    """A problem file or record is malformed (names the source, line and field)."""


class ConfigError(FaithcbError, ValueError):
    """A configuration value is invalid (names the field and the allowed values)."""


class ModelLoadError(FaithcbError, RuntimeError):
    """A model or tokenizer could not be loaded (says how to fix it)."""


class HistoryFormatError(FaithcbError, ValueError):
    """A faithcb history file is malformed (names the file and line)."""


class ProbeError(FaithcbError, RuntimeError):
    """A probe failed on a model; inside training this is reported, not raised (unless strict)."""
