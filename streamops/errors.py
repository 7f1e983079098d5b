"""Errors a user can act on: each names the cause and the fix in one paragraph."""

from __future__ import annotations

# Exit code of a process that refuses to start for a reason no restart can fix (a database schema
# that is not the code's): sysexits' EX_CONFIG. The supervisor opens the pipeline's breaker on it
# at once instead of relaunching into the same refusal.
EXIT_REFUSED = 78
# Starts the line of the job's log that says why it refused; the supervisor quotes that line.
REFUSAL_MARK = "streamops: refused to start:"


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
