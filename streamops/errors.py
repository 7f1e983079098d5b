"""Errors a user can act on: each names the cause and the fix in one paragraph."""

from __future__ import annotations


class StreamopsError(Exception):
    """An error the CLI prints as a paragraph (no traceback) before exiting non-zero."""

    def __init__(self, message: str, *, log_tail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.log_tail = log_tail

    def __str__(self) -> str:
        if self.log_tail:
            return f"{self.message}\n\nLast lines of the log:\n{self.log_tail}"
        return self.message
