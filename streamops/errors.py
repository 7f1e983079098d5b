"""Errors a user can act on: each names the cause and the fix in one paragraph."""

from __future__ import annotations

# Exit code of a process that refuses to start for a reason no restart can fix (a database schema
# that is not the code's): sysexits' EX_CONFIG. The supervisor opens the pipeline's breaker on it
# at once instead of relaunching into the same refusal.
EXIT_REFUSED = 78
# Starts the line of the job's log that says why it refused; the supervisor quotes that line.
REFUSAL_MARK = "streamops: refused to start:"
# Exit code of a job that stopped, or did not start, because the filesystem of its checkpoints or
# archive is full (sysexits' EX_IOERR): not the job's fault, so the supervisor waits for free
# space instead of counting a crash (docs/adr/0005-full-disk.md).
EXIT_DISK_FULL = 74
# Starts the line of the job's log that says which filesystem is full and how much is free.
DISK_FULL_MARK = "streamops: disk full:"


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
