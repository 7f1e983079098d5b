-- The alerts pipeline (spark_jobs/jobs/alerts.py): per-second counts of error-log lines, the
-- windowed counts every enabled rule's window length needs, and the index the alert matching uses.
--
-- Why two count tables: rules (and so window lengths) change while the query runs, but a Spark
-- streaming aggregation's windows are fixed when the query starts. The query therefore keeps one
-- stateful aggregate of 1-second buckets (update mode, absolute values); every micro-batch
-- upserts the buckets it changed into error_counts_1s and recomputes, from those buckets, the
-- windows of every length the current rules use into error_counts. Both upserts write absolute
-- values, so a replayed batch leaves both tables as they were.

CREATE TABLE IF NOT EXISTS error_counts_1s (
    service        VARCHAR(128) NOT NULL,
    level          VARCHAR(8)   NOT NULL,
    second_start   DATETIME(3)  NOT NULL COMMENT 'inclusive, UTC, a whole second',
    event_count    BIGINT       NOT NULL,
    first_seen     DATETIME(3)  NOT NULL COMMENT 'event time of the earliest line',
    last_seen      DATETIME(3)  NOT NULL COMMENT 'event time of the latest line',
    sample_message TEXT         NULL COMMENT 'message of the earliest line (ties: lowest offset)',
    updated_at     DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
                                ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (service, level, second_start),
    KEY ix_error_counts_1s_level_second (level, second_start),
    KEY ix_error_counts_1s_updated_at (updated_at),
    CONSTRAINT ck_error_counts_1s_level
        CHECK (level IN ('DEBUG', 'INFO', 'WARN', 'ERROR', 'CRITICAL')),
    CONSTRAINT ck_error_counts_1s_event_count CHECK (event_count >= 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin
  COMMENT='error-log lines per service, level and second of event time';

CREATE TABLE IF NOT EXISTS error_counts (
    service        VARCHAR(128) NOT NULL,
    level          VARCHAR(8)   NOT NULL,
    window_seconds INT          NOT NULL,
    window_start   DATETIME(3)  NOT NULL COMMENT 'inclusive, UTC, a multiple of window_seconds',
    window_end     DATETIME(3)  NOT NULL COMMENT 'exclusive, UTC',
    event_count    BIGINT       NOT NULL,
    first_seen     DATETIME(3)  NOT NULL,
    last_seen      DATETIME(3)  NOT NULL,
    updated_at     DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
                                ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (service, level, window_seconds, window_start),
    KEY ix_error_counts_level_window (level, window_seconds, window_start),
    CONSTRAINT ck_error_counts_level
        CHECK (level IN ('DEBUG', 'INFO', 'WARN', 'ERROR', 'CRITICAL')),
    CONSTRAINT ck_error_counts_window CHECK (window_end > window_start AND window_seconds > 0),
    CONSTRAINT ck_error_counts_event_count CHECK (event_count >= 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin
  COMMENT='error-log lines per service, level and tumbling window of every length the rules use';
