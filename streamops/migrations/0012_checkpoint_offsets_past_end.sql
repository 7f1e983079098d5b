-- checkpoint_health learns the high end of a checkpoint's offsets, beside lost_offsets (the low
-- end). A topic deleted and recreated (or truncated) starts again at offset 0, below what the
-- checkpoint committed: Spark then fails the query, or skips the new topic's records until it
-- passes the old offsets. offsets_past_end counts the records the checkpoint is ahead of the end,
-- missing_partitions the checkpoint's partitions Kafka no longer has (the topic is gone, or came
-- back with fewer partitions). Both 0 for rows recorded before this migration.
-- Re-runnable: ADD COLUMN IF NOT EXISTS.
ALTER TABLE checkpoint_health
    ADD COLUMN IF NOT EXISTS offsets_past_end BIGINT NOT NULL DEFAULT 0
        COMMENT 'records between Kafka end offset and the committed offset above it'
        AFTER lost_offsets,
    ADD COLUMN IF NOT EXISTS missing_partitions INT NOT NULL DEFAULT 0
        COMMENT 'partitions of the checkpoint that Kafka no longer has' AFTER offsets_past_end;
