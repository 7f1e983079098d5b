-- Tables of the scheduled maintenance DAGs (streamops/maintenance, docs/maintenance.md).
--
-- order_revenue_1m / order_revenue_1h are rollups of order_revenue_5s, rebuilt from it by the
-- compaction DAG for windows that are final. order_revenue_1m and checkpoint_health are RANGE
-- partitioned by day on their time column, so retention drops a whole day at once instead of
-- deleting rows; the DAG splits p_future into daily partitions ahead of time. Partitioning needs
-- the time column in the primary key, which is why it is there. The tables start with only
-- p_history and p_future, so this file is fast and re-runnable (IF NOT EXISTS).

CREATE TABLE IF NOT EXISTS order_revenue_1m (
    window_start DATETIME(3)   NOT NULL COMMENT 'inclusive, UTC, on a whole minute',
    currency     CHAR(3)       NOT NULL,
    window_end   DATETIME(3)   NOT NULL COMMENT 'exclusive, UTC',
    order_count  BIGINT        NOT NULL,
    item_count   BIGINT        NOT NULL,
    revenue      DECIMAL(18,2) NOT NULL,
    source_rows  INT           NOT NULL COMMENT 'order_revenue_5s windows summed into this row',
    updated_at   DATETIME(3)   NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
                               ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (window_start, currency),
    CONSTRAINT ck_order_revenue_1m_window CHECK (window_end > window_start)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin
  COMMENT='revenue per 1-minute window and currency, rolled up from order_revenue_5s'
  PARTITION BY RANGE COLUMNS (window_start) (
    PARTITION p_history VALUES LESS THAN ('2000-01-01 00:00:00'),
    PARTITION p_future VALUES LESS THAN (MAXVALUE)
  );

CREATE TABLE IF NOT EXISTS order_revenue_1h (
    window_start DATETIME(3)   NOT NULL COMMENT 'inclusive, UTC, on a whole hour',
    currency     CHAR(3)       NOT NULL,
    window_end   DATETIME(3)   NOT NULL COMMENT 'exclusive, UTC',
    order_count  BIGINT        NOT NULL,
    item_count   BIGINT        NOT NULL,
    revenue      DECIMAL(18,2) NOT NULL,
    source_rows  INT           NOT NULL COMMENT 'order_revenue_1m windows summed into this row',
    updated_at   DATETIME(3)   NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
                               ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (window_start, currency),
    CONSTRAINT ck_order_revenue_1h_window CHECK (window_end > window_start)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin
  COMMENT='revenue per 1-hour window and currency, rolled up from order_revenue_1m; kept forever';

-- Progress of each maintenance job that must resume where it stopped, e.g. the rollup's
-- high-water mark on order_revenue_5s.updated_at. Only advanced after a verified step.
CREATE TABLE IF NOT EXISTS maintenance_state (
    name       VARCHAR(64)  NOT NULL,
    value      DATETIME(3)  NOT NULL,
    updated_at DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
                            ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin
  COMMENT='resume points of the compaction DAG';

-- One row per checkpoint and check. Findings are JSON: [{"finding", "severity", "detail"}].
CREATE TABLE IF NOT EXISTS checkpoint_health (
    pipeline              VARCHAR(64)   NOT NULL,
    query_name            VARCHAR(128)  NOT NULL,
    checked_at            DATETIME(3)   NOT NULL COMMENT 'UTC',
    checkpoint_path       VARCHAR(1024) NOT NULL,
    status                VARCHAR(8)    NOT NULL COMMENT 'worst finding: ok, info, warning, critical',
    query_state           VARCHAR(16)   NULL COMMENT 'from the Redis heartbeat; NULL if unknown',
    last_offsets_batch    BIGINT        NULL,
    last_committed_batch  BIGINT        NULL,
    last_commit_at        DATETIME(3)   NULL COMMENT 'mtime of the last commit file',
    commit_age_seconds    DOUBLE        NULL,
    uncommitted_batches   INT           NOT NULL DEFAULT 0,
    total_lag             BIGINT        NULL COMMENT 'sum over partitions; NULL if unknown',
    lag_by_partition      LONGTEXT      NULL COMMENT 'JSON: topic -> partition -> lag',
    lost_offsets          BIGINT        NOT NULL DEFAULT 0
                          COMMENT 'records between the committed offset and Kafka log start',
    checkpoint_bytes      BIGINT        NULL,
    state_bytes           BIGINT        NULL,
    temp_files_removed    INT           NOT NULL DEFAULT 0,
    findings              LONGTEXT      NOT NULL,
    PRIMARY KEY (pipeline, query_name, checked_at),
    KEY ix_checkpoint_health_checked_at (checked_at),
    CONSTRAINT ck_checkpoint_health_status CHECK (status IN ('ok', 'info', 'warning', 'critical')),
    CONSTRAINT ck_checkpoint_health_lag CHECK (JSON_VALID(lag_by_partition)),
    CONSTRAINT ck_checkpoint_health_findings CHECK (JSON_VALID(findings))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin
  COMMENT='one row per streaming checkpoint and health check'
  PARTITION BY RANGE COLUMNS (checked_at) (
    PARTITION p_history VALUES LESS THAN ('2000-01-01 00:00:00'),
    PARTITION p_future VALUES LESS THAN (MAXVALUE)
  );
