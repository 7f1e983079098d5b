"""Scheduled maintenance of a long-running platform, run by the Airflow DAGs in ``dags/``.

- :mod:`streamops.maintenance.compaction`: rollups of the revenue windows, retention by
  partition drop or chunked delete, ANALYZE/OPTIMIZE, each step verified against totals.
- :mod:`streamops.maintenance.checkpoints`: health of the Spark checkpoints, read from disk and
  compared with Kafka.
- :mod:`streamops.maintenance.archive`: retention of the raw Parquet archive, by whole days.
- :mod:`streamops.maintenance.offset_reset`: by hand (``streamops pipeline reset-offsets``), a
  checkpoint whose offsets aged out of Kafka moved to the earliest available, the loss recorded.

All are plain functions of :class:`streamops.config.Settings` and a config dataclass, so they run
the same from a task, a test or a shell. See docs/maintenance.md.
"""

from streamops.errors import StreamopsError


class MaintenanceError(StreamopsError):
    """A maintenance step refused to go on; nothing it would have removed was removed."""


class VerificationError(MaintenanceError):
    """Totals that must not change did change (or disagree across tables)."""
