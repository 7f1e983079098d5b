-- quarantine.record_key becomes LONGBLOB (was BLOB, at most 65,535 bytes), like raw_payload.
-- A broker accepts a key as large as its record size limit (message.max.bytes, about 1 MB by
-- default, and a topic may raise it). A rejected record with a longer key failed its INSERT, so
-- the micro-batch failed on every retry and the supervisor's breaker stopped the pipeline: the
-- quarantine exists to keep one bad record from doing that. LONGBLOB keeps any key whole.
-- A new file, not an edit of 0001: applied files are checked by their checksum (streamops/db.py).
-- Re-runnable: a MODIFY to the type the column already has changes nothing. On a filled table
-- MariaDB may rebuild quarantine (a table copy); retention keeps it to 30 days of rejects.
ALTER TABLE quarantine
    MODIFY record_key LONGBLOB NULL COMMENT 'Kafka key as received';
