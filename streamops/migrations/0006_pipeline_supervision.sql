-- Supervision of the streaming jobs (streamops/pipelines, plugins/streamops_airflow).
--
-- pipeline_leases: one row per checkpoint folder. Whoever holds the lease (owner, until
-- expires_at) is the only launcher allowed to run a query on that checkpoint. fencing_token grows
-- by one on every grant to a new holder and never goes back (a released row keeps its token), so a
-- stale holder can be told apart from the current one. The row is locked with SELECT ... FOR UPDATE
-- for every change (streamops/pipelines/lease.py). pid, process_start_epoch and host identify the
-- job process the holder launched, so a reattaching launcher finds it and nobody mistakes a reused
-- pid for it.
--
-- pipeline_restart_state: the restart policy's state per pipeline (streamops/pipelines/restart.py)
-- with the circuit breaker, so a restarted scheduler or a retried task continues the count.

CREATE TABLE IF NOT EXISTS pipeline_leases (
    checkpoint_key      CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL
                        COMMENT 'sha256 of checkpoint_location',
    checkpoint_location VARCHAR(1024) NOT NULL,
    pipeline            VARCHAR(64)   NULL,
    owner               VARCHAR(255)  NULL COMMENT 'NULL when released',
    fencing_token       BIGINT        NOT NULL DEFAULT 0,
    acquired_at         DATETIME(3)   NULL COMMENT 'UTC, when the current holder got it',
    expires_at          DATETIME(3)   NULL COMMENT 'UTC; renewed by the holder',
    host                VARCHAR(255)  NULL COMMENT 'host of the launched process',
    pid                 INT           NULL,
    process_start_epoch DOUBLE        NULL COMMENT 'psutil create_time of the pid (pid reuse)',
    updated_at          DATETIME(3)   NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
                        ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (checkpoint_key),
    KEY ix_pipeline_leases_pipeline (pipeline)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin
  COMMENT='one running query per checkpoint: lease with fencing token';

CREATE TABLE IF NOT EXISTS pipeline_restart_state (
    pipeline             VARCHAR(64)  NOT NULL,
    phase                VARCHAR(16)  NOT NULL COMMENT 'stopped, running, backing_off, breaker_open',
    consecutive_failures INT          NOT NULL DEFAULT 0,
    restarts_total       INT          NOT NULL DEFAULT 0,
    breaker_opened_at    DATETIME(3)  NULL COMMENT 'UTC; NULL while the breaker is closed',
    next_restart_at      DATETIME(3)  NULL COMMENT 'UTC, while backing off',
    state                LONGTEXT     NOT NULL COMMENT 'JSON of RestartState, the full record',
    updated_at           DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
                         ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (pipeline),
    CONSTRAINT ck_pipeline_restart_state_state CHECK (JSON_VALID(state))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin
  COMMENT='restart policy and circuit breaker state of every supervised pipeline';
