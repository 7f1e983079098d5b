"""Versioned MariaDB schema of streamops, applied in order by :func:`streamops.db.migrate`.

Rules for the files in this package, so that every database ends up with the same schema:

- Name: ``NNNN_short_description.sql``, numbered contiguously from ``0001``.
- Never edit a file once it has been applied anywhere: its sha256 is recorded in
  ``schema_migrations`` and a changed file stops ``migrate``. Change the schema with a new file.
- One statement per ``;`` at the end of a line; full-line ``--`` comments only. No procedures,
  triggers or ``DELIMITER`` (the splitter in ``streamops.db`` is deliberately simple).
- MariaDB commits DDL implicitly, so a file cannot be rolled back as a whole. Write every
  statement so that re-running it after a half-applied file is harmless (``IF NOT EXISTS``,
  ``INSERT IGNORE``).
"""

from pathlib import Path

MIGRATIONS_DIR = Path(__file__).resolve().parent
