"""One exception hierarchy; the CLI maps each class to an exit code (``cli.EXIT_CODES``, and only there)."""

from __future__ import annotations


class AnnaRunError(Exception):
    """Base of every error anna-run raises on purpose. ``message`` says what went wrong, ``hint``
    (optional) what to do about it."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ConfigError(AnnaRunError):
    """Bad project file, job, payload, variable or option: nothing was started."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        hint: str | None = None,
    ) -> None:
        where = ""
        if file is not None:
            where = file
            if line is not None:
                where += f":{line}"
                if column is not None:
                    where += f":{column}"
            where += ": "
        super().__init__(where + message, hint=hint)
        self.file, self.line, self.column = file, line, column


class NotFound(AnnaRunError):
    """A run, job, result or artifact that was asked for does not exist."""


class EngineError(AnnaRunError):
    """The container engine is unreachable, refused something, or went away (runner failure)."""


class StoreError(AnnaRunError):
    """The run store cannot be read or written."""


class BrokerError(AnnaRunError):
    """The runner hosts' broker or coordination Redis cannot be reached (runner failure)."""


class JobTimeout(AnnaRunError):
    """The job ran past its wall-clock limit."""


class Cancelled(AnnaRunError):
    """The user (or ``anna-run cancel``) stopped the run."""

    recorded = False  # the run's record already says so, with what was known when it stopped
