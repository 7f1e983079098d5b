-- The vitals pipeline (spark_jobs/jobs/vitals.py, docs/pipelines/vitals.md): per-patient clinical
-- ranges, every valid reading (the history the anomaly model trains on), the readings that were
-- flagged (out of range or anomalous), and the contract change that lets vitals_alerts hold
-- "no signal" flags.
--
-- Why flagged readings get their own table: a vitals_alerts row covers a patient, a vital and a
-- window, but its readings arrive over many micro-batches. Each batch stores its flagged readings
-- by their natural key (a replay writes nothing new) and then recomputes the alert rows it touched
-- from this table, so every alert holds absolute values and a replayed batch changes nothing.

-- A row overrides the default clinical range of one vital for one patient; a NULL bound keeps
-- the default of that side. Read by the job every --thresholds-refresh-seconds.
CREATE TABLE IF NOT EXISTS patient_thresholds (
    patient_id     VARCHAR(64)  NOT NULL,
    vital          VARCHAR(32)  NOT NULL,
    threshold_low  DOUBLE       NULL COMMENT 'NULL = the default lower bound',
    threshold_high DOUBLE       NULL COMMENT 'NULL = the default upper bound',
    note           VARCHAR(255) NULL COMMENT 'why, e.g. a clinical order',
    updated_at     DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
                                ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (patient_id, vital),
    CONSTRAINT ck_patient_thresholds_vital CHECK (vital IN (
        'heart_rate', 'spo2', 'systolic_bp', 'diastolic_bp', 'temperature_c', 'respiratory_rate'
    )),
    CONSTRAINT ck_patient_thresholds_range CHECK (
        threshold_low IS NULL OR threshold_high IS NULL OR threshold_low < threshold_high
    )
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin
  COMMENT='per-patient overrides of the default clinical ranges';

-- One row per reading. A repeat of the same patient, device and event time is a duplicate and
-- kept once. device_id is '' when the reading named no device (it is part of the key).
CREATE TABLE IF NOT EXISTS vitals_readings (
    patient_id       VARCHAR(64)  NOT NULL,
    event_time       DATETIME(3)  NOT NULL COMMENT 'when the device measured (UTC)',
    device_id        VARCHAR(128) NOT NULL DEFAULT '' COMMENT 'empty when the reading named none',
    heart_rate       DOUBLE       NULL,
    spo2             DOUBLE       NULL,
    systolic_bp      DOUBLE       NULL,
    diastolic_bp     DOUBLE       NULL,
    temperature_c    DOUBLE       NULL,
    respiratory_rate DOUBLE       NULL,
    source_partition INT          NULL COMMENT 'Kafka partition of the first accepted copy',
    source_offset    BIGINT       NULL COMMENT 'Kafka offset of the first accepted copy',
    ingested_at      DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (patient_id, event_time, device_id),
    KEY ix_vitals_readings_event_time (event_time)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin
  COMMENT='every valid patient-vitals reading once';

-- One row per flagged vital of a reading. window_start/window_end are the tumbling alert window
-- the reading falls in; the bounds are those the reading was checked against when it arrived.
CREATE TABLE IF NOT EXISTS vitals_reading_flags (
    patient_id     VARCHAR(64)  NOT NULL,
    vital          VARCHAR(32)  NOT NULL,
    event_time     DATETIME(3)  NOT NULL,
    device_id      VARCHAR(128) NOT NULL DEFAULT '',
    window_start   DATETIME(3)  NOT NULL,
    window_end     DATETIME(3)  NOT NULL,
    value          DOUBLE       NOT NULL,
    threshold_low  DOUBLE       NULL COMMENT 'clinical range in force; NULL = no bound',
    threshold_high DOUBLE       NULL,
    out_of_range   BOOLEAN      NOT NULL,
    severity       DOUBLE       NOT NULL COMMENT 'distance outside the range, 0 when inside',
    z_score        DOUBLE       NULL COMMENT 'against the model baseline; NULL = no model',
    anomaly        BOOLEAN      NOT NULL,
    anomaly_low    DOUBLE       NULL COMMENT 'model band: mean - z * stddev',
    anomaly_high   DOUBLE       NULL COMMENT 'model band: mean + z * stddev',
    model_version  INT          NULL,
    flagged_at     DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (patient_id, vital, event_time, device_id),
    KEY ix_vitals_reading_flags_patient_window (patient_id, window_start),
    KEY ix_vitals_reading_flags_window_start (window_start),
    CONSTRAINT ck_vitals_reading_flags_window CHECK (window_end > window_start)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin
  COMMENT='readings whose vital was out of range or anomalous';

-- Contract change (shared/CONTRACT.md, vitals_alerts): vital may also be 'signal', a "no signal"
-- flag for a patient whose device went silent (reason 'no_signal'). One statement, so it is
-- atomic and re-runnable. The added columns are additive.
ALTER TABLE vitals_alerts
    DROP CONSTRAINT IF EXISTS ck_vitals_alerts_vital,
    ADD CONSTRAINT ck_vitals_alerts_vital CHECK (vital IN (
        'heart_rate', 'spo2', 'systolic_bp', 'diastolic_bp', 'temperature_c', 'respiratory_rate',
        'signal'
    )),
    ADD COLUMN IF NOT EXISTS anomaly_count BIGINT NOT NULL DEFAULT 0
        COMMENT 'readings of this vital in the window the model found anomalous',
    ADD COLUMN IF NOT EXISTS max_abs_z DOUBLE NULL COMMENT 'largest |z| against the model',
    ADD COLUMN IF NOT EXISTS model_version INT NULL COMMENT 'anomaly model that scored them',
    ADD COLUMN IF NOT EXISTS resolved_at DATETIME(3) NULL
        COMMENT 'no_signal: event time of the reading that ended the silence (or the discharge)'
