-- What the streaming queries are doing: one row per micro-batch (written by the progress listener,
-- spark_jobs/common/listener.py) and the last known state of each query. Redis holds the live
-- heartbeat; these tables are the history behind it.
--
-- Query and run ids are Spark's UUIDs in their 36-character text form. A query's id survives
-- restarts from its checkpoint; its run id is new on every start, and batch ids restart at the
-- checkpoint's next batch, so a batch re-run after a crash gets a row of its own.
-- Offsets are JSON text, kept as LONGTEXT with a JSON_VALID check (what MariaDB's JSON alias is).

CREATE TABLE IF NOT EXISTS query_progress (
    query_id                  CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    run_id                    CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    batch_id                  BIGINT       NOT NULL,
    pipeline                  VARCHAR(64)  NOT NULL,
    query_name                VARCHAR(128) NOT NULL COMMENT 'the query id when it has no name',
    progress_at               DATETIME(3)  NOT NULL COMMENT 'when the trigger started (UTC)',
    num_input_rows            BIGINT       NOT NULL,
    input_rows_per_second     DOUBLE       NULL COMMENT 'NULL when Spark reports NaN',
    processed_rows_per_second DOUBLE       NULL COMMENT 'NULL when Spark reports NaN',
    batch_duration_ms         BIGINT       NULL COMMENT 'durationMs.triggerExecution',
    watermark                 DATETIME(3)  NULL COMMENT 'event-time watermark; NULL before one',
    state_rows                BIGINT       NOT NULL DEFAULT 0
                              COMMENT 'numRowsTotal summed over the stateful operators',
    rows_dropped_by_watermark BIGINT       NOT NULL DEFAULT 0
                              COMMENT 'numRowsDroppedByWatermark summed over the operators',
    sink_output_rows          BIGINT       NULL COMMENT 'NULL when the sink does not say (-1)',
    start_offsets             LONGTEXT     NULL COMMENT 'JSON: source description -> offsets',
    end_offsets               LONGTEXT     NULL COMMENT 'JSON: source description -> offsets',
    latest_offsets            LONGTEXT     NULL COMMENT 'JSON: source description -> offsets',
    recorded_at               DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (query_id, run_id, batch_id),
    KEY ix_query_progress_pipeline_query_progress_at (pipeline, query_name, progress_at),
    KEY ix_query_progress_progress_at (progress_at),
    CONSTRAINT ck_query_progress_start_offsets CHECK (JSON_VALID(start_offsets)),
    CONSTRAINT ck_query_progress_end_offsets CHECK (JSON_VALID(end_offsets)),
    CONSTRAINT ck_query_progress_latest_offsets CHECK (JSON_VALID(latest_offsets))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin
  COMMENT='one row per micro-batch of every streaming query';

CREATE TABLE IF NOT EXISTS query_status (
    pipeline       VARCHAR(64)  NOT NULL,
    query_name     VARCHAR(128) NOT NULL COMMENT 'the query id when it has no name',
    query_id       CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    run_id         CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    state          VARCHAR(16)  NOT NULL,
    started_at     DATETIME(3)  NULL COMMENT 'NULL when the listener joined a running query',
    terminated_at  DATETIME(3)  NULL,
    last_exception MEDIUMTEXT   NULL COMMENT 'why the last run failed; NULL unless failed',
    error_class    VARCHAR(255) NULL COMMENT 'Spark error class of that exception, if any',
    updated_at     DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
                                ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (pipeline, query_name),
    KEY ix_query_status_run_id (run_id),
    CONSTRAINT ck_query_status_state CHECK (state IN ('running', 'stopped', 'failed'))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin
  COMMENT='the latest run of every streaming query: running, stopped or failed';
