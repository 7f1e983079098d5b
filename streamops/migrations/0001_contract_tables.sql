-- Every MariaDB table of the data contract (shared/CONTRACT.md), with the key the contract names.
--
-- Conventions, so that every table reads the same:
-- * Times are DATETIME(3) in UTC. Column defaults use CURRENT_TIMESTAMP(3), which follows the
--   session time zone: writers set time_zone = '+00:00' (streamops.db.connect does).
-- * Money is DECIMAL. Vital signs are measurements, not money, so they are DOUBLE.
-- * Text compares byte for byte (utf8mb4_nopad_bin): 'A1', 'a1' and 'A1 ' are three different
--   order ids, exactly as Spark and Python see them, so a key deduplicated in Spark is never
--   merged with another one by the database.
-- * No foreign keys: each table is written by its own streaming sink, in any order, and a sink
--   must never fail because another one has not caught up yet.
-- * IF NOT EXISTS everywhere: DDL commits implicitly, so a half-applied file must be re-runnable.

CREATE TABLE IF NOT EXISTS orders (
    order_id         VARCHAR(64)   NOT NULL,
    customer_id      VARCHAR(128)  NOT NULL,
    product_id       VARCHAR(128)  NOT NULL,
    quantity         INT           NOT NULL,
    unit_price       DECIMAL(12,2) NOT NULL,
    currency         CHAR(3)       NOT NULL DEFAULT 'EUR',
    amount           DECIMAL(14,2) NOT NULL,
    event_time       DATETIME(3)   NOT NULL COMMENT 'when the order was placed (UTC)',
    ingested_at      DATETIME(3)   NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
                                   COMMENT 'when the pipeline stored the order (UTC)',
    source_partition INT           NULL COMMENT 'Kafka partition of the first accepted copy',
    source_offset    BIGINT        NULL COMMENT 'Kafka offset of the first accepted copy',
    PRIMARY KEY (order_id),
    KEY ix_orders_event_time (event_time),
    KEY ix_orders_customer_event_time (customer_id, event_time),
    KEY ix_orders_product_event_time (product_id, event_time),
    CONSTRAINT ck_orders_quantity CHECK (quantity >= 1),
    CONSTRAINT ck_orders_unit_price CHECK (unit_price >= 0),
    CONSTRAINT ck_orders_amount CHECK (amount = quantity * unit_price)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin
  COMMENT='every valid order once; a repeated order_id is a duplicate';

CREATE TABLE IF NOT EXISTS order_revenue_5s (
    window_start DATETIME(3)   NOT NULL COMMENT 'inclusive, UTC',
    currency     CHAR(3)       NOT NULL,
    window_end   DATETIME(3)   NOT NULL COMMENT 'exclusive, UTC',
    order_count  BIGINT        NOT NULL,
    item_count   BIGINT        NOT NULL,
    revenue      DECIMAL(18,2) NOT NULL,
    updated_at   DATETIME(3)   NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
                               ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (window_start, currency),
    KEY ix_order_revenue_5s_updated_at (updated_at),
    CONSTRAINT ck_order_revenue_5s_window CHECK (window_end > window_start),
    CONSTRAINT ck_order_revenue_5s_counts CHECK (order_count >= 0 AND item_count >= 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin
  COMMENT='revenue per 5-second tumbling event-time window and currency';

-- Kafka topic names are at most 249 characters. The payload is kept as bytes because a record
-- may be quarantined precisely for not being valid UTF-8.
CREATE TABLE IF NOT EXISTS quarantine (
    source_topic     VARCHAR(249) NOT NULL,
    source_partition INT          NOT NULL,
    source_offset    BIGINT       NOT NULL,
    record_key       BLOB         NULL COMMENT 'Kafka key as received',
    raw_payload      LONGBLOB     NULL COMMENT 'Kafka value as received',
    reason           TEXT         NOT NULL,
    pipeline         VARCHAR(64)  NOT NULL,
    source_timestamp DATETIME(3)  NULL COMMENT 'Kafka record timestamp (UTC)',
    quarantined_at   DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (source_topic, source_partition, source_offset),
    KEY ix_quarantine_quarantined_at (quarantined_at),
    KEY ix_quarantine_pipeline_quarantined_at (pipeline, quarantined_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin
  COMMENT='every rejected record, once per Kafka position';

-- Levels are the contract's normalised ones (WARNING -> WARN, FATAL -> CRITICAL).
CREATE TABLE IF NOT EXISTS alert_rules (
    rule_id         VARCHAR(64)  NOT NULL,
    level           VARCHAR(8)   NOT NULL,
    service         VARCHAR(128) NULL COMMENT 'NULL = any service',
    window_seconds  INT          NOT NULL,
    threshold_count INT          NOT NULL COMMENT 'alert when at least this many lines match',
    enabled         BOOLEAN      NOT NULL DEFAULT TRUE,
    description     VARCHAR(255) NULL,
    created_at      DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    updated_at      DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
                                 ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (rule_id),
    CONSTRAINT ck_alert_rules_level
        CHECK (level IN ('DEBUG', 'INFO', 'WARN', 'ERROR', 'CRITICAL')),
    CONSTRAINT ck_alert_rules_window CHECK (window_seconds > 0),
    CONSTRAINT ck_alert_rules_threshold CHECK (threshold_count > 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin
  COMMENT='what the error-log pipeline alerts on';

-- alert_id is a hex digest (sha256) of the rule and the window, so a replayed window updates
-- the same row instead of raising a second alert. ASCII keeps the key 64 bytes, not 256.
CREATE TABLE IF NOT EXISTS alerts (
    alert_id       CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    rule_id        VARCHAR(64)  NOT NULL,
    level          VARCHAR(8)   NOT NULL,
    service        VARCHAR(128) NULL COMMENT 'NULL when the alert is not about one service',
    window_start   DATETIME(3)  NOT NULL,
    window_end     DATETIME(3)  NOT NULL,
    event_count    BIGINT       NOT NULL,
    sample_message TEXT         NULL,
    first_seen     DATETIME(3)  NULL COMMENT 'event time of the first matching line',
    last_seen      DATETIME(3)  NULL COMMENT 'event time of the last matching line',
    created_at     DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    updated_at     DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
                                ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (alert_id),
    KEY ix_alerts_window_start (window_start),
    KEY ix_alerts_rule_window_start (rule_id, window_start),
    KEY ix_alerts_service_window_start (service, window_start),
    CONSTRAINT ck_alerts_window CHECK (window_end > window_start),
    CONSTRAINT ck_alerts_event_count CHECK (event_count >= 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin
  COMMENT='one row per rule and window that crossed its threshold';

-- A reading may omit any vital sign, so every aggregate is NULL when no reading in the window
-- carried that sign.
CREATE TABLE IF NOT EXISTS vitals_summary_1m (
    patient_id           VARCHAR(64) NOT NULL,
    window_start         DATETIME(3) NOT NULL,
    window_end           DATETIME(3) NOT NULL,
    reading_count        BIGINT      NOT NULL,
    heart_rate_min       DOUBLE      NULL,
    heart_rate_avg       DOUBLE      NULL,
    heart_rate_max       DOUBLE      NULL,
    spo2_min             DOUBLE      NULL,
    spo2_avg             DOUBLE      NULL,
    spo2_max             DOUBLE      NULL,
    systolic_bp_min      DOUBLE      NULL,
    systolic_bp_avg      DOUBLE      NULL,
    systolic_bp_max      DOUBLE      NULL,
    diastolic_bp_min     DOUBLE      NULL,
    diastolic_bp_avg     DOUBLE      NULL,
    diastolic_bp_max     DOUBLE      NULL,
    temperature_c_min    DOUBLE      NULL,
    temperature_c_avg    DOUBLE      NULL,
    temperature_c_max    DOUBLE      NULL,
    respiratory_rate_min DOUBLE      NULL,
    respiratory_rate_avg DOUBLE      NULL,
    respiratory_rate_max DOUBLE      NULL,
    updated_at           DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
                                     ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (patient_id, window_start),
    KEY ix_vitals_summary_1m_window_start (window_start),
    CONSTRAINT ck_vitals_summary_1m_window CHECK (window_end > window_start),
    CONSTRAINT ck_vitals_summary_1m_reading_count CHECK (reading_count >= 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin
  COMMENT='min/avg/max of each vital sign per patient and 1-minute window';

CREATE TABLE IF NOT EXISTS vitals_alerts (
    patient_id         VARCHAR(64)  NOT NULL,
    vital              VARCHAR(32)  NOT NULL,
    window_start       DATETIME(3)  NOT NULL,
    window_end         DATETIME(3)  NOT NULL,
    observed_value     DOUBLE       NULL COMMENT 'the reading furthest out of range',
    observed_min       DOUBLE       NULL,
    observed_max       DOUBLE       NULL,
    threshold_low      DOUBLE       NULL COMMENT 'NULL = no lower bound',
    threshold_high     DOUBLE       NULL COMMENT 'NULL = no upper bound',
    reason             VARCHAR(255) NOT NULL,
    reading_count      BIGINT       NOT NULL COMMENT 'readings of this vital in the window',
    out_of_range_count BIGINT       NOT NULL,
    device_id          VARCHAR(128) NULL,
    first_seen         DATETIME(3)  NULL COMMENT 'event time of the first out-of-range reading',
    last_seen          DATETIME(3)  NULL COMMENT 'event time of the last out-of-range reading',
    created_at         DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    updated_at         DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
                                    ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (patient_id, vital, window_start),
    KEY ix_vitals_alerts_window_start (window_start),
    CONSTRAINT ck_vitals_alerts_vital CHECK (vital IN (
        'heart_rate', 'spo2', 'systolic_bp', 'diastolic_bp', 'temperature_c', 'respiratory_rate'
    )),
    CONSTRAINT ck_vitals_alerts_window CHECK (window_end > window_start)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin
  COMMENT='out-of-range readings per patient, vital sign and window';

-- seconds_to_pay may be negative: the payment event can carry an earlier time than the order.
-- payment_id is indexed but not unique, so one bad record cannot stop the join sink.
CREATE TABLE IF NOT EXISTS order_payments (
    order_id        VARCHAR(64)   NOT NULL,
    payment_id      VARCHAR(64)   NOT NULL,
    order_amount    DECIMAL(14,2) NOT NULL,
    paid_amount     DECIMAL(14,2) NOT NULL,
    currency        CHAR(3)       NOT NULL,
    status          VARCHAR(16)   NOT NULL,
    order_time      DATETIME(3)   NOT NULL,
    payment_time    DATETIME(3)   NOT NULL,
    seconds_to_pay  DECIMAL(12,3) NOT NULL,
    amount_mismatch BOOLEAN       NOT NULL COMMENT 'paid_amount differs from order_amount',
    updated_at      DATETIME(3)   NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
                                  ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (order_id),
    KEY ix_order_payments_payment_id (payment_id),
    KEY ix_order_payments_payment_time (payment_time),
    KEY ix_order_payments_status_payment_time (status, payment_time),
    CONSTRAINT ck_order_payments_status CHECK (status IN ('authorized', 'captured', 'failed'))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin
  COMMENT='each order joined with its payment';
