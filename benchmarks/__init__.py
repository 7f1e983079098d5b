"""Benchmarks of the platform, run with ``python -m benchmarks.runner`` (see README.md)."""


class BenchmarkError(RuntimeError):
    """A benchmark cannot run here (no broker, no Java, ...): the message says what to do.

    Defined here rather than in ``runner`` so the runner, which runs as ``__main__``, and the
    benchmark modules, which import it, share one class.
    """
