-- Rollups built by the compaction DAG (streamops/maintenance/count_rollups.py,
-- docs/maintenance.md) for buckets that are final:
--   error_counts_1s -> error_counts_1m -> error_counts_1h (the alerts pipeline's counts);
--   vitals_readings -> vitals_summary_1h (every stored reading, per patient and hour).
-- Once an hour is rolled up and verified, retention may delete its fine rows; the hour rows are
-- kept forever. error_counts_1m is RANGE partitioned by day like order_revenue_1m, so its
-- retention drops whole days.

CREATE TABLE IF NOT EXISTS error_counts_1m (
    window_start DATETIME(3)  NOT NULL COMMENT 'inclusive, UTC, on a whole minute',
    service      VARCHAR(128) NOT NULL,
    level        VARCHAR(8)   NOT NULL,
    window_end   DATETIME(3)  NOT NULL COMMENT 'exclusive, UTC',
    event_count  BIGINT       NOT NULL,
    first_seen   DATETIME(3)  NOT NULL,
    last_seen    DATETIME(3)  NOT NULL,
    source_rows  INT          NOT NULL COMMENT 'error_counts_1s seconds summed into this row',
    updated_at   DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
                              ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (window_start, service, level),
    KEY ix_error_counts_1m_service_level (service, level, window_start),
    CONSTRAINT ck_error_counts_1m_window CHECK (window_end > window_start),
    CONSTRAINT ck_error_counts_1m_event_count CHECK (event_count >= 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin
  COMMENT='error-log lines per 1-minute window, service and level, rolled up from error_counts_1s'
  PARTITION BY RANGE COLUMNS (window_start) (
    PARTITION p_history VALUES LESS THAN ('2000-01-01 00:00:00'),
    PARTITION p_future VALUES LESS THAN (MAXVALUE)
  );

CREATE TABLE IF NOT EXISTS error_counts_1h (
    window_start DATETIME(3)  NOT NULL COMMENT 'inclusive, UTC, on a whole hour',
    service      VARCHAR(128) NOT NULL,
    level        VARCHAR(8)   NOT NULL,
    window_end   DATETIME(3)  NOT NULL COMMENT 'exclusive, UTC',
    event_count  BIGINT       NOT NULL,
    first_seen   DATETIME(3)  NOT NULL,
    last_seen    DATETIME(3)  NOT NULL,
    source_rows  INT          NOT NULL COMMENT 'error_counts_1m minutes summed into this row',
    updated_at   DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
                              ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (window_start, service, level),
    KEY ix_error_counts_1h_service_level (service, level, window_start),
    CONSTRAINT ck_error_counts_1h_window CHECK (window_end > window_start),
    CONSTRAINT ck_error_counts_1h_event_count CHECK (event_count >= 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin
  COMMENT='error-log lines per 1-hour window, service and level, from error_counts_1m; kept forever';

-- Per patient and hour, rolled up from every stored reading (vitals_readings) by the compaction
-- DAG once the hour is final. Each vital sign keeps its own count, sum, min and max, because a
-- reading may omit any sign: the hour's average is sum / count of that sign, exact however the
-- readings were spread over minutes. Kept forever; vitals_readings is verified against it
-- (reading counts per patient and hour) before its retention deletes anything.
CREATE TABLE IF NOT EXISTS vitals_summary_1h (
    window_start           DATETIME(3) NOT NULL COMMENT 'inclusive, UTC, on a whole hour',
    patient_id             VARCHAR(64) NOT NULL,
    window_end             DATETIME(3) NOT NULL COMMENT 'exclusive, UTC',
    reading_count          BIGINT      NOT NULL,
    heart_rate_count       BIGINT      NOT NULL,
    heart_rate_sum         DOUBLE      NULL,
    heart_rate_min         DOUBLE      NULL,
    heart_rate_max         DOUBLE      NULL,
    heart_rate_avg         DOUBLE AS (heart_rate_sum / NULLIF(heart_rate_count, 0)) VIRTUAL,
    spo2_count             BIGINT      NOT NULL,
    spo2_sum               DOUBLE      NULL,
    spo2_min               DOUBLE      NULL,
    spo2_max               DOUBLE      NULL,
    spo2_avg               DOUBLE AS (spo2_sum / NULLIF(spo2_count, 0)) VIRTUAL,
    systolic_bp_count      BIGINT      NOT NULL,
    systolic_bp_sum        DOUBLE      NULL,
    systolic_bp_min        DOUBLE      NULL,
    systolic_bp_max        DOUBLE      NULL,
    systolic_bp_avg        DOUBLE AS (systolic_bp_sum / NULLIF(systolic_bp_count, 0)) VIRTUAL,
    diastolic_bp_count     BIGINT      NOT NULL,
    diastolic_bp_sum       DOUBLE      NULL,
    diastolic_bp_min       DOUBLE      NULL,
    diastolic_bp_max       DOUBLE      NULL,
    diastolic_bp_avg       DOUBLE AS (diastolic_bp_sum / NULLIF(diastolic_bp_count, 0)) VIRTUAL,
    temperature_c_count    BIGINT      NOT NULL,
    temperature_c_sum      DOUBLE      NULL,
    temperature_c_min      DOUBLE      NULL,
    temperature_c_max      DOUBLE      NULL,
    temperature_c_avg      DOUBLE AS (temperature_c_sum / NULLIF(temperature_c_count, 0)) VIRTUAL,
    respiratory_rate_count BIGINT      NOT NULL,
    respiratory_rate_sum   DOUBLE      NULL,
    respiratory_rate_min   DOUBLE      NULL,
    respiratory_rate_max   DOUBLE      NULL,
    respiratory_rate_avg   DOUBLE AS (respiratory_rate_sum / NULLIF(respiratory_rate_count, 0))
                           VIRTUAL,
    source_rows            INT         NOT NULL COMMENT 'vitals_readings rows summed into this row',
    updated_at             DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
                                       ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (window_start, patient_id),
    KEY ix_vitals_summary_1h_patient (patient_id, window_start),
    CONSTRAINT ck_vitals_summary_1h_window CHECK (window_end > window_start)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin
  COMMENT='vital signs per patient and hour, rolled up from vitals_readings; kept forever';
