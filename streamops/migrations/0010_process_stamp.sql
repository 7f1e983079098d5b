-- pipeline_leases.process_stamp: who the launched process is, in terms the system clock cannot
-- move (streamops/processes.py): '<boot id>/<start in clock ticks since boot>'.
-- process_start_epoch (psutil's create_time) is the boot time plus that tick, and the boot time
-- moves with every step of the system clock: after a time synchronisation or a resumed virtual
-- machine, a running job would no longer match its own lease and be called dead. The epoch
-- stays: it is when the job started, to judge its heartbeats by. NULL for a pod in Kubernetes
-- and for leases recorded before this migration (those are matched by the epoch, as before).
ALTER TABLE pipeline_leases
    ADD COLUMN IF NOT EXISTS process_stamp VARCHAR(64) CHARACTER SET ascii NULL
        COMMENT 'boot id/start ticks of the pid (pid reuse, clock steps)' AFTER process_start_epoch;
