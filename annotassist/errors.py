"""Errors a user can act on.

Every error raised on purpose by annotassist derives from `AnnotassistError`; the CLI prints its message
(which names the file, key or image and what to do) and exits with status 2, with no traceback.
"""
from __future__ import annotations

from dataclasses import dataclass


class AnnotassistError(Exception):
    """An error whose message is meant for the user."""


class ConfigError(AnnotassistError):
    pass


class DataError(AnnotassistError):
    pass


class WorkspaceError(AnnotassistError):
    pass


class TrainingError(AnnotassistError):
    pass


class CheckpointError(AnnotassistError):
    pass


class WeightsError(AnnotassistError):
    pass


@dataclass(frozen=True)
class Problem:
    """One bad input found while reading a dataset: where it is, what is wrong, and what to do about it."""

    file: str
    message: str
    fix: str = ""
    line: int | None = None
    listed: tuple[str, int] | None = None  # (list file, line) that named `file`, when the problem is in its content

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        if self.listed is not None:
            where += f" (line {self.listed[1]} of {self.listed[0]})"
        text = f"{where}: {self.message}"
        return f"{text} ({self.fix})" if self.fix else text
