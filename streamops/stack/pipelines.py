"""Pipeline jobs of `streamops up --with-pipelines`: each Spark job as a supervised process.

Airflow's supervision DAGs take this role as they land; until then the local stack runs the jobs
itself, with the same health rule: every query of the job reports progress to Redis recently.
"""

from __future__ import annotations

import sys
import time

from spark_jobs.jobs import PIPELINE_QUERIES
from streamops.stack.base import Component, Health

# A query that has not reported for this long is stalled (idle queries still report).
HEARTBEAT_STALE_SECONDS = 60.0


class PipelineJob(Component):
    pipeline: str
    # A graceful stop lets the running micro-batch finish and commit.
    stop_timeout_seconds = 60.0

    def ports(self) -> dict[str, int]:
        return {}

    def command(self) -> list[str]:
        return [sys.executable, "-m", f"spark_jobs.jobs.{self.pipeline}"]

    def environment(self) -> dict[str, str]:
        return {**super().environment(), **self.settings.as_env()}

    def check_health(self) -> Health:
        import redis

        from spark_jobs.common.listener import query_key

        client = redis.Redis.from_url(
            self.settings.redis_url, socket_timeout=2, decode_responses=True
        )
        try:
            details = []
            for query_name in PIPELINE_QUERIES[self.pipeline]:
                state = client.hgetall(query_key(self.pipeline, query_name))
                status = str(state.get("state") or "")
                heartbeat = float(state.get("heartbeat_at") or 0)
                age = time.time() - heartbeat
                if status != "running" or age > HEARTBEAT_STALE_SECONDS:
                    return Health(False, f"{query_name}: {status or 'no progress yet'}")
                details.append(f"{query_name} {age:.0f} s ago")
            return Health(True, "heartbeat " + ", ".join(details))
        finally:
            client.close()


def _pipeline_class(pipeline: str) -> type[PipelineJob]:
    return type(
        f"Pipeline_{pipeline}",
        (PipelineJob,),
        {"pipeline": pipeline, "name": f"pipeline-{pipeline}"},
    )


PIPELINE_COMPONENTS = [_pipeline_class(pipeline) for pipeline in PIPELINE_QUERIES]
