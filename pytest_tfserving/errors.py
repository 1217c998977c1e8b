"""The error hierarchy. Every error says what was wrong, with which value, and the fix."""

from __future__ import annotations


class TFServingError(Exception):
    """Base of every error raised by pytest-tfserving."""


class ConfigError(TFServingError):
    """A setting, marker argument or input file has a value we cannot use."""


class ModelError(TFServingError):
    """The SavedModel path or file cannot be read as a TF Serving model."""


class ServerStartError(TFServingError):
    """The serving process or container did not come up."""


class ModelLoadError(ServerStartError):
    """The server came up but reported that the model failed to load."""


class ServerTimeoutError(ServerStartError):
    """The server did not become AVAILABLE before the deadline."""


class GateError(TFServingError):
    """A gate could not be evaluated (as opposed to: it was evaluated and failed)."""


def with_log_tail(error: TFServingError, log_tail: str, source: str) -> TFServingError:
    """Attach a server log tail to an error, between BEGIN/END markers (TFX style)."""
    if log_tail.strip():
        note = (f"----- BEGIN {source} log (last lines) -----\n"
                f"{log_tail.rstrip()}\n"
                f"----- END {source} log -----")
        # BaseException.add_note exists from Python 3.11; __notes__ is what it fills.
        setattr(error, "__notes__", [*getattr(error, "__notes__", []), note])  # noqa: B010
    return error
