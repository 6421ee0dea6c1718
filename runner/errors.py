"""One exception hierarchy; the CLI maps each class to an exit code (and only the CLI)."""

from __future__ import annotations


class AnnaRunError(Exception):
    """Base of every error anna-run raises on purpose. ``exit_code`` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ConfigError(AnnaRunError):
    """Bad project file, job, payload, variable or option: nothing was started."""

    exit_code = 2

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

    exit_code = 1


class EngineError(AnnaRunError):
    """The container engine is unreachable, refused something, or went away (runner failure)."""

    exit_code = 125


class StoreError(AnnaRunError):
    """The run store cannot be read or written."""

    exit_code = 125


class BrokerError(AnnaRunError):
    """The runner hosts' broker or coordination Redis cannot be reached (runner failure)."""

    exit_code = 125


class JobTimeout(AnnaRunError):
    """The job ran past its wall-clock limit."""

    exit_code = 124


class Cancelled(AnnaRunError):
    """The user (or ``anna-run cancel``) stopped the run."""

    exit_code = 130
    recorded = False  # the run's record already says so, with what was known when it stopped
