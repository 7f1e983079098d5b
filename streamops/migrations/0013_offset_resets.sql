-- offset_resets: the records an operator gave up on with `streamops pipeline reset-offsets`
-- (docs/operations.md, "Offsets aged out of Kafka"). A query whose checkpointed offset is below its
-- topic's log start (retention deleted the records before the query read them) fails on every
-- start (failOnDataLoss); the reset moves the checkpoint up to the log start, and this table keeps
-- what was skipped, one row per query, topic and partition: the records [from_offset, to_offset)
-- are gone unread, lost_records of them.

CREATE TABLE IF NOT EXISTS offset_resets (
    id              BIGINT        NOT NULL AUTO_INCREMENT,
    pipeline        VARCHAR(64)   NOT NULL,
    query_name      VARCHAR(128)  NOT NULL,
    topic           VARCHAR(249)  NOT NULL COMMENT 'Kafka allows at most 249 characters',
    `partition`     INT           NOT NULL,
    from_offset     BIGINT        NOT NULL COMMENT 'the checkpoint''s offset: first record lost',
    to_offset       BIGINT        NOT NULL COMMENT 'Kafka''s log start: where the query resumes',
    lost_records    BIGINT        NOT NULL COMMENT 'to_offset - from_offset',
    reset_at        DATETIME(3)   NOT NULL COMMENT 'UTC',
    reset_by        VARCHAR(255)  NOT NULL COMMENT 'who ran the command, on which host',
    checkpoint_path VARCHAR(1024) NOT NULL COMMENT 'the query checkpoint that was moved',
    PRIMARY KEY (id),
    KEY ix_offset_resets_pipeline (pipeline, reset_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
