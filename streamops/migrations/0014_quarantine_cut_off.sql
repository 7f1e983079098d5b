-- A quarantined payload or key longer than 1 MiB (QUARANTINE_KEEP_BYTES in
-- spark_jobs/transforms/cleansing.py) keeps its first 1 MiB, and its size and SHA-256 go here.
-- The broker's default cap (message.max.bytes, about 1 MB) never reaches that, but a topic with a
-- raised cap, or a compressed batch that inflates to tens of MB, does: such a row passed
-- max_allowed_packet (16 MiB), its INSERT failed, and the micro-batch failed on every retry.
-- NULL: the value is stored whole (every row written before this migration).
-- Re-runnable: ADD COLUMN IF NOT EXISTS.
ALTER TABLE quarantine
    ADD COLUMN IF NOT EXISTS raw_payload_bytes BIGINT NULL
        COMMENT 'size of a payload cut to its first 1 MiB; NULL when kept whole',
    ADD COLUMN IF NOT EXISTS raw_payload_sha256 CHAR(64) NULL
        COMMENT 'SHA-256 (hex) of the whole payload when cut',
    ADD COLUMN IF NOT EXISTS record_key_bytes BIGINT NULL
        COMMENT 'size of a key cut to its first 1 MiB; NULL when kept whole',
    ADD COLUMN IF NOT EXISTS record_key_sha256 CHAR(64) NULL
        COMMENT 'SHA-256 (hex) of the whole key when cut';
