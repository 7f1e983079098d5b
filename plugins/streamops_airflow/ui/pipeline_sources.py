"""Reads what a pipeline's status row is made of: Redis heartbeats, MariaDB lease and restart
state, Kafka end offsets. Airflow's side (the DAG and its runs) comes from
``streamops.airflow_rest``.

A source that does not answer does not take the page down: its part of the row stays unknown and
the row carries a warning naming the source, so an operator still sees the rest.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass, field

from streamops.clients import kafka_consumer, redis_client
from streamops.config import Settings
from streamops.supervision import lease as leases
from streamops.supervision.restart import RestartState
from streamops.supervision.spec import PipelineSpec
from streamops_airflow.ui.pipeline_status import JobProcess, TopicOffsets, parse_source_offsets

# The page must answer while a service is down: each source gets a few seconds at most.
SOURCE_TIMEOUT_SECONDS = 3.0


@dataclass
class PipelineData:
    """Everything but Airflow's part of one pipeline's row; None where a source failed."""

    query_hashes: dict[str, dict[str, str]] = field(default_factory=dict)
    restart: RestartState = field(default_factory=RestartState)
    process: JobProcess | None = None
    warnings: list[str] = field(default_factory=list)


def read_pipelines(
    specs: Iterable[PipelineSpec], settings: Settings
) -> tuple[dict[str, PipelineData], TopicOffsets, list[str]]:
    """Per pipeline its data; the end offsets of every topic the queries read; global warnings."""
    specs = list(specs)
    data = {spec.name: PipelineData() for spec in specs}
    try:
        for name, hashes in read_query_hashes(specs, settings).items():
            data[name].query_hashes = hashes
    except Exception as exc:
        for item in data.values():
            item.warnings.append(f"Redis: {_short(exc)}")
    try:
        restart_states, processes = read_supervision_state(specs, settings)
        for name in data:
            data[name].restart = restart_states[name]
            data[name].process = processes[name]
    except Exception as exc:
        for item in data.values():
            item.warnings.append(f"MariaDB: {_short(exc)}")
    topics = sorted(
        {
            topic
            for item in data.values()
            for fields in item.query_hashes.values()
            for topic in parse_source_offsets(fields.get("end_offsets"))
        }
    )
    warnings: list[str] = []
    topic_ends: TopicOffsets = {}
    if topics:
        try:
            topic_ends = read_topic_end_offsets(topics, settings)
        except Exception as exc:
            warnings.append(f"Kafka: {_short(exc)}")
    return data, topic_ends, warnings


def read_query_hashes(
    specs: Iterable[PipelineSpec], settings: Settings
) -> dict[str, dict[str, dict[str, str]]]:
    """pipeline → query → its Redis hash (empty when the query never reported)."""

    from streamops.contract.redis_keys import query_key

    keys = [(spec.name, query) for spec in specs for query in spec.queries]
    client = redis_client(settings, timeout_seconds=SOURCE_TIMEOUT_SECONDS, decode_responses=True)
    with closing(client):
        pipe = client.pipeline(transaction=False)
        for pipeline, query in keys:
            pipe.hgetall(query_key(pipeline, query))
        results = pipe.execute()
    hashes: dict[str, dict[str, dict[str, str]]] = {}
    for (pipeline, query), fields in zip(keys, results, strict=True):
        hashes.setdefault(pipeline, {})[query] = dict(fields)
    return hashes


def read_supervision_state(
    specs: Iterable[PipelineSpec], settings: Settings
) -> tuple[dict[str, RestartState], dict[str, JobProcess | None]]:
    """Restart state and the leased job process of each pipeline, in one MariaDB connection."""
    from streamops.db import connect

    restart_states: dict[str, RestartState] = {}
    processes: dict[str, JobProcess | None] = {}
    with closing(connect(settings)) as connection:
        for spec in specs:
            restart_states[spec.name] = leases.load_restart_state(connection, spec.name)
            lease = leases.current(connection, spec.checkpoint_location(settings.checkpoint_root))
            processes[spec.name] = job_process(spec, lease, settings)
    return restart_states, processes


def job_process(
    spec: PipelineSpec, lease: leases.Lease | None, settings: Settings | None = None
) -> JobProcess | None:
    """The process a held lease records; None when nobody holds the checkpoint. Whether it
    lives: by its processes on this host, or, given ``settings``, by the job heartbeat of a job
    launched on another host in client mode: the supervisor's own judgement
    (``streamops.supervision.job_processes.job_is_alive``). Unknown (None) otherwise."""
    if lease is None or lease.owner is None:
        return None
    alive: bool | None = None
    if lease.pid is not None and lease.host == socket.gethostname():
        from streamops_airflow.hooks import JobHandle, SparkJobHook

        alive = SparkJobHook.is_running(
            JobHandle(
                pipeline=spec.name,
                queries=spec.queries,
                checkpoint_location=lease.checkpoint_location,
                owner=lease.owner,
                fencing_token=lease.fencing_token,
                host=lease.host,
                pid=lease.pid,
                process_start_epoch=lease.process_start_epoch or 0.0,
                process_stamp=lease.process_stamp or "",
                exit_file="",
                log_file="",
            )
        )
    elif lease.pid and settings is not None and not (lease.host or "k8s:").startswith("k8s:"):
        from streamops.supervision import job_processes

        handle = job_processes.handle_from_lease(spec, settings, lease)
        try:
            alive = job_processes.job_is_alive(spec, settings, handle)
        except Exception:  # Redis away: unknown, as it was before the heartbeat
            alive = None
    return JobProcess(
        owner=lease.owner,
        pid=lease.pid,
        host=lease.host,
        start_epoch=lease.process_start_epoch,
        alive=alive,
        fencing_token=lease.fencing_token,
    )


def read_topic_end_offsets(topics: Iterable[str], settings: Settings) -> TopicOffsets:
    """topic → partition → end offset (the next offset to be written), read from the brokers."""
    from confluent_kafka import TopicPartition

    timeout = SOURCE_TIMEOUT_SECONDS
    # Never subscribes or commits: the group id only satisfies the client.
    consumer = kafka_consumer(
        settings,
        "streamops-operations-ui",
        {"socket.timeout.ms": int(timeout * 1000)},
        own_group=False,
    )
    try:
        metadata = consumer.list_topics(timeout=timeout)
        ends: TopicOffsets = {}
        for topic in topics:
            described = metadata.topics.get(topic)
            if described is None or described.error is not None:
                continue
            ends[topic] = {
                partition: int(
                    consumer.get_watermark_offsets(
                        TopicPartition(topic, partition), timeout=timeout, cached=False
                    )[1]
                )
                for partition in described.partitions
            }
        return ends
    finally:
        consumer.close()


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else 'no message'}"[:300]


def merge_warnings(*groups: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(w for group in groups for w in group))
