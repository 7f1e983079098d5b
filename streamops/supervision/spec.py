"""Pipeline specs: what a supervised streaming job is, declared once in ``pipelines.yaml``.

One spec per pipeline says which job runs (its module and arguments), where (its Airflow Spark
Connection, ``spark_default`` by default, holds the master; a ``kubernetes`` section adds the
driver pod's image and account), on which checkpoint, at which trigger, how it is restarted and
when it counts as unhealthy. The supervision DAG, the ``spark-submit`` command line and the
health check all read the same spec, so a pipeline is never configured twice.

The spec is the only registry of pipelines: the jobs take the names and checkpoints of their
queries from it (``spark_jobs.common.runner.JobContext``), and so do the checkpoint checks
(``streamops.maintenance.checkpoints.default_targets``).

Defaults. Beside ``pipelines:``, the file may hold a ``defaults:`` mapping of spec fields that
every pipeline takes unless it states its own; a pipeline states only what differs. The merge is
deep for mappings and shallow for everything else: a mapping (``spark_conf``, ``restart``,
``health``, ``kubernetes``) merges key by key, so a pipeline adding one Spark setting keeps the
default ones (and cannot drop one: it sets the value it needs instead); any other value, lists
included (``job_args``, ``tags``), replaces the default as a whole, and so does
``kubernetes: null``. ``name``, ``job_module`` and ``queries`` say which pipeline a spec is and
have no default. Omitted fields in both places take the model's defaults below.

Queries and their roles. ``queries`` lists the names of the queries the job starts, under which
they report (heartbeats, status rows, Redis keys). A query's *role* is its name without the
``<pipeline>_`` prefix (``orders_revenue`` → ``revenue``), and its checkpoint is
``<checkpoint root>/<pipeline>/<role>``. A job asks for its queries by role, all at once
(``context.queries("records", "revenue")``); when those roles and the spec's differ, in either
direction, the job fails before it starts a query and says which. The order of ``queries`` does
not matter, nor does the order the job starts them in. A job may start an opt-in query the spec
does not list (alerts' ``--realtime-batch`` query): it takes its name and checkpoint from the same
rule, and nothing supervises it, since the spec does not expect its heartbeat.

Loading reads one local YAML file and nothing else (no Kafka, MariaDB or Redis), so the DAG
factory may call it while the dag-processor parses DAG files. Every error names the file, the
pipeline and the field, e.g. ``pipelines.yaml: pipeline 'orders': restart.max_failures: ...``,
and says so when the offending value came from ``defaults``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from streamops.config import PROJECT_ROOT
from streamops.errors import StreamopsError
from streamops.supervision.job_health import StallBounds

PIPELINES_FILE = PROJECT_ROOT / "pipelines.yaml"
# Another specs file instead of pipelines.yaml, for every process alike (DAG parsing, the
# triggerer, the CLI): a test stack with short backoffs, or a deployment's own file.
PIPELINES_FILE_ENV = "STREAMOPS_PIPELINES_FILE"
PIPELINE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_DURATION = re.compile(
    r"^\s*(?P<amount>\d+(\.\d+)?)\s*(?P<unit>ms|milliseconds?|s|seconds?|m|minutes?|h|hours?)\s*$"
)
_UNIT_SECONDS = {"ms": 0.001, "millisecond": 0.001, "s": 1, "second": 1, "m": 60, "minute": 60}
_UNIT_SECONDS |= {"h": 3600, "hour": 3600}
_TOP_LEVEL_KEYS = ("defaults", "pipelines")
# They say which pipeline a spec is: never taken from ``defaults:``.
_PER_PIPELINE_FIELDS = frozenset({"name", "job_module", "queries"})
# The Airflow Spark Connection of a spec that names none; `streamops up` creates it.
DEFAULT_SPARK_CONN_ID = "spark_default"
# spark-submit options the spec sets itself; a conf entry must not override them behind its back.
_RESERVED_CONF = frozenset({"spark.master", "spark.submit.deployMode", "spark.app.name"})
# A Secret's name (a DNS subdomain) and a key of its data, as Kubernetes validates them.
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SECRET_NAME = re.compile(rf"^(?=.{{1,253}}$){_DNS_LABEL}(\.{_DNS_LABEL})*$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
# The passwords a job reads, by their variables (streamops.config.Settings.as_env).
MARIADB_PASSWORD_ENV = "STREAMOPS_MARIADB_PASSWORD"
REDIS_PASSWORD_ENV = "STREAMOPS_REDIS_PASSWORD"
KAFKA_SASL_PASSWORD_ENV = "STREAMOPS_KAFKA_SASL_PASSWORD"


class PipelineSpecError(StreamopsError):
    """A pipeline spec is missing, unreadable or invalid; the message names pipeline and field."""


def duration_seconds(text: str) -> float:
    """``"5 seconds"``, ``"500 ms"``, ``"2 minutes"`` → seconds (Spark's processingTime syntax)."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration; write e.g. '5 seconds', '500 ms' or '1 minute'"
        )
    unit = match["unit"].rstrip("s") if match["unit"] not in ("s", "ms") else match["unit"]
    return float(match["amount"]) * _UNIT_SECONDS[unit]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RestartPolicy(_Strict):
    """Exponential backoff with jitter, a stable-run reset and a crash-loop circuit breaker."""

    initial_backoff_seconds: float = Field(default=5.0, gt=0)
    max_backoff_seconds: float = Field(default=300.0, gt=0)
    backoff_multiplier: float = Field(default=2.0, ge=1)
    # A job that failed after it ran healthy (every query reporting) is no crash loop: it restarts
    # after this, not after the backoff, and the failures in a row count from it again. The
    # breaker counts the failure all the same.
    restart_after_healthy_seconds: float = Field(default=0.0, ge=0)
    # ±ratio of the delay, so restarts of many pipelines after one outage spread out.
    jitter_ratio: float = Field(default=0.2, ge=0, le=1)
    # A run this long without failure forgets the earlier failures.
    stable_run_seconds: float = Field(default=600.0, gt=0)
    # The breaker opens at max_failures failures within failure_window_seconds.
    max_failures: int = Field(default=5, ge=1)
    failure_window_seconds: float = Field(default=900.0, gt=0)

    @model_validator(mode="after")
    def _backoff_bounds(self) -> RestartPolicy:
        if self.max_backoff_seconds < self.initial_backoff_seconds:
            raise ValueError(
                f"max_backoff_seconds ({self.max_backoff_seconds:g}) is below "
                f"initial_backoff_seconds ({self.initial_backoff_seconds:g})"
            )
        return self


# The job heartbeat of a job on another host may be this many poll intervals old, at least.
JOB_HEARTBEAT_POLLS = 3.0


class HealthThresholds(_Strict):
    """When a running query counts as stalled: its heartbeat is older than the allowed age."""

    # Floor of the allowed heartbeat age; idle queries still report, so this holds without data.
    heartbeat_timeout_seconds: float = Field(default=60.0, gt=0)
    # A slow trigger reports rarely: allow this many trigger intervals when that is longer.
    trigger_intervals: float = Field(default=3.0, gt=0)
    # After a (re)start, no heartbeat yet is not a stall until this much time has passed.
    startup_grace_seconds: float = Field(default=180.0, ge=0)
    poll_interval_seconds: float = Field(default=15.0, gt=0)
    # A running batch is busy, not stalled, for this long plus its planned rows at
    # replay_rows_per_second (plus the start-up grace for a run's first batch).
    max_batch_seconds: float = Field(default=240.0, gt=0)
    replay_rows_per_second: float = Field(default=500.0, gt=0)
    # At this 1-minute load average per core the machine is overloaded: a slow query is
    # reported "overloaded" and not restarted, until it is overload_stretch times past its bound.
    overload_load_per_core: float = Field(default=2.0, gt=0)
    overload_stretch: float = Field(default=4.0, ge=1)
    # Local mode: a launch waits up to this long, in all, for the launch lock and while another
    # pipeline's job is still starting (JVM warm-up, first batch), so jobs do not warm up
    # together on a small machine. 0: no wait.
    start_alone_seconds: float = Field(default=300.0, ge=0)
    # A job launched on another host (the watcher cannot see its process) lives while its
    # driver's job heartbeat (written every second) is younger than this, or than
    # JOB_HEARTBEAT_POLLS polls when that is longer (streamops.supervision.job_health).
    job_heartbeat_timeout_seconds: float = Field(default=30.0, gt=0)

    def heartbeat_max_age_seconds(self, trigger_interval_seconds: float | None = None) -> float:
        """Heartbeats older than this mean stalled: the floor, or N trigger intervals if longer."""
        interval = trigger_interval_seconds or 0.0
        return max(self.heartbeat_timeout_seconds, interval * self.trigger_intervals)

    def stall_bounds(self, trigger_interval_seconds: float | None = None) -> StallBounds:
        """The health rule's bounds (streamops.supervision.job_health) for a trigger interval."""
        return StallBounds(
            heartbeat_max_age_seconds=self.heartbeat_max_age_seconds(trigger_interval_seconds),
            startup_grace_seconds=self.startup_grace_seconds,
            max_batch_seconds=self.max_batch_seconds,
            replay_rows_per_second=self.replay_rows_per_second,
            overload_load_per_core=self.overload_load_per_core,
            overload_stretch=self.overload_stretch,
            job_heartbeat_max_age_seconds=self.job_heartbeat_max_age_seconds(),
        )

    def job_heartbeat_max_age_seconds(self) -> float:
        """A job heartbeat older than this means the job on another host is gone: the timeout,
        or ``JOB_HEARTBEAT_POLLS`` poll intervals when that is longer (a slow poll must not
        read a live job as dead between two of its looks)."""
        return max(
            self.job_heartbeat_timeout_seconds, JOB_HEARTBEAT_POLLS * self.poll_interval_seconds
        )


class KubernetesSubmit(_Strict):
    """Cluster mode on Kubernetes: the driver runs in a pod of ``image``."""

    api_server: str = Field(description="e.g. https://kubernetes.default.svc")
    namespace: str = "streamops"
    image: str
    service_account: str = "streamops-spark"
    executor_instances: int = Field(default=1, ge=1)
    # Where the image keeps the job modules and the connector jars (see the Dockerfile).
    application_root: str = "local:///opt/streamops/spark-venv/lib/python3.11/site-packages"
    jars_dir: str = "local:///opt/streamops/cache/spark-kafka-{spark_version}"
    # The Kubernetes Secrets that hold the job's passwords, each as "<secret name>:<key>": the
    # driver and executor pods read them from there (valueFrom.secretKeyRef), never from
    # spark-submit's command line. Required when the settings have that password
    # (streamops.supervision.submit); the Helm chart's are
    # "<release>-streamops-mariadb:mariadb-password" and "<release>-streamops-redis:redis-password"
    # (Kafka's SASL/SCRAM password: the Secret holding it, when Kafka asks for one).
    mariadb_password_secret: str | None = None
    redis_password_secret: str | None = None
    kafka_sasl_password_secret: str | None = None

    @field_validator("api_server")
    @classmethod
    def _https(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"{value!r} must be the API server's URL, e.g. https://10.0.0.1:443")
        return value.rstrip("/")

    @field_validator("application_root", "jars_dir")
    @classmethod
    def _image_path(cls, value: str) -> str:
        if not value.startswith("local:///"):
            raise ValueError(f"{value!r} must be a path inside the image, local:///...")
        return value.rstrip("/")

    @field_validator(
        "mariadb_password_secret", "redis_password_secret", "kafka_sasl_password_secret"
    )
    @classmethod
    def _secret_key_ref(cls, value: str | None) -> str | None:
        if value is None:
            return value
        name, colon, key = value.partition(":")
        if not colon or not _SECRET_NAME.match(name) or not _SECRET_KEY.match(key):
            raise ValueError(
                f"{value!r} must name a Kubernetes Secret and its key as '<secret name>:<key>', "
                "e.g. 'streamops-mariadb:mariadb-password'"
            )
        return value

    def secret_key_refs(self) -> dict[str, str]:
        """Variable of the job → ``<secret name>:<key>`` of the Secret that holds its value."""
        refs = {
            MARIADB_PASSWORD_ENV: self.mariadb_password_secret,
            REDIS_PASSWORD_ENV: self.redis_password_secret,
            KAFKA_SASL_PASSWORD_ENV: self.kafka_sasl_password_secret,
        }
        return {name: ref for name, ref in refs.items() if ref is not None}


class PipelineSpec(_Strict):
    name: str
    job_module: str = Field(description="dotted module of the job, e.g. spark_jobs.jobs.orders")
    queries: tuple[str, ...] = Field(min_length=1, description="query names the job starts")
    job_args: tuple[str, ...] = ()
    spark_conf: dict[str, str] = Field(default_factory=dict)
    # The Airflow Connection (type spark) whose master, deploy mode and spark-submit binary the
    # job runs with; `streamops up` and the chart create spark_default when it is missing.
    spark_conn_id: str = Field(default=DEFAULT_SPARK_CONN_ID, min_length=1)
    kubernetes: KubernetesSubmit | None = None
    # Root the job writes its checkpoints under (<root>/<name>/...); None: settings'.
    checkpoint_root: str | None = None
    # Spark processingTime; None: the next batch starts when the previous one ends.
    trigger_interval: str | None = None
    restart: RestartPolicy = Field(default_factory=lambda: RestartPolicy())
    health: HealthThresholds = Field(default_factory=lambda: HealthThresholds())
    # How long a graceful stop (SIGTERM: queries finish their batch) may take before SIGKILL.
    stop_timeout_seconds: float = Field(default=60.0, gt=0)
    lease_ttl_seconds: float = Field(default=120.0, ge=10)
    # A sink write that fails on a MariaDB or Redis outage is written again, inside its batch,
    # for up to this long (spark_jobs.common.outages) before the query fails and the supervisor
    # waits for the outage instead. 0: fail at once. Below health.max_batch_seconds, so the
    # waiting batch reads as busy, never as stalled.
    outage_ride_out_seconds: float = Field(default=120.0, ge=0)
    # Once each query caught up with its topics the job lowers its own CPU priority to this
    # niceness (spark_jobs.common.priority), so that a job starting or relaunched elsewhere on the
    # machine, and the services, go first. 0: never.
    settled_nice: int = Field(default=10, ge=0, le=19)
    schedule: str = "*/5 * * * *"
    owner: str = "streamops"
    retries: int = Field(default=1, ge=1)
    tags: tuple[str, ...] = ()
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not PIPELINE_NAME.match(value):
            raise ValueError(
                f"{value!r} must be lower case letters, digits and underscores, "
                "starting with a letter (it becomes a DAG id and a Redis key)"
            )
        return value

    @field_validator("job_module")
    @classmethod
    def _module(cls, value: str) -> str:
        if not _MODULE_NAME.match(value):
            raise ValueError(f"{value!r} is not a dotted module name like spark_jobs.jobs.orders")
        return value

    @field_validator("trigger_interval")
    @classmethod
    def _trigger(cls, value: str | None) -> str | None:
        if value is not None:
            duration_seconds(value)
        return value

    @field_validator("spark_conf")
    @classmethod
    def _conf(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not key.startswith("spark."):
                raise ValueError(f"{key!r} is not a Spark setting (they start with 'spark.')")
            if key in _RESERVED_CONF:
                raise ValueError(
                    f"{key!r} is set from the spec itself (the master and deploy mode from its "
                    "Spark Connection, 'spark_conn_id'; the name from 'name')"
                )
        return value

    @model_validator(mode="after")
    def _one_checkpoint_per_query(self) -> PipelineSpec:
        roles: dict[str, str] = {}
        for query in self.queries:
            role = self.query_role(query)
            if role in roles:
                raise ValueError(
                    f"queries {roles[role]!r} and {query!r} would share the checkpoint "
                    f"<root>/{self.name}/{role}; give every query a name of its own"
                )
            roles[role] = query
        return self

    @model_validator(mode="after")
    def _ride_out_within_a_batch(self) -> PipelineSpec:
        if self.outage_ride_out_seconds >= self.health.max_batch_seconds:
            raise ValueError(
                f"outage_ride_out_seconds ({self.outage_ride_out_seconds:g}) must be below "
                f"health.max_batch_seconds ({self.health.max_batch_seconds:g}): a batch that "
                "waits out an outage would otherwise be judged stalled and restarted"
            )
        return self

    # --- derived --------------------------------------------------------------------------------
    @property
    def dag_id(self) -> str:
        return f"streamops_supervise_{self.name}"

    @property
    def trigger_interval_seconds(self) -> float | None:
        return None if self.trigger_interval is None else duration_seconds(self.trigger_interval)

    @property
    def heartbeat_max_age_seconds(self) -> float:
        """Heartbeats older than this mean stalled: the floor, or N trigger intervals if longer."""
        return self.health.heartbeat_max_age_seconds(self.trigger_interval_seconds)

    @property
    def stall_bounds(self) -> StallBounds:
        """The health rule's bounds for this pipeline (streamops.supervision.job_health)."""
        return self.health.stall_bounds(self.trigger_interval_seconds)

    def job_arguments(self) -> list[str]:
        """Arguments of the job's CLI: the spec's, plus the trigger when the spec sets one."""
        args = list(self.job_args)
        if self.trigger_interval is not None and "--trigger-interval" not in args:
            args += ["--trigger-interval", self.trigger_interval]
        return args

    def checkpoint_location(self, default_root: str) -> str:
        """The pipeline's checkpoint folder: the lease that guards it is keyed by this string."""
        return f"{(self.checkpoint_root or default_root).rstrip('/')}/{self.name}"

    # --- queries (the rule in the module docstring) ---------------------------------------------
    def query_role(self, query_name: str) -> str:
        """The query's role in its job: its name without ``<pipeline>_``."""
        return query_name.removeprefix(f"{self.name}_")

    def query_name_for(self, role: str) -> str:
        """The name of the job's query in ``role``: the spec's, or by the rule for an opt-in one."""
        listed = {self.query_role(query): query for query in self.queries}
        return listed.get(role, f"{self.name}_{role}")

    def query_checkpoint(self, query_name: str, default_root: str) -> str:
        """The query's checkpoint folder: ``<checkpoint location>/<role>``."""
        return f"{self.checkpoint_location(default_root)}/{self.query_role(query_name)}"


def parse_specs(document: Any, source: str = "pipelines.yaml") -> dict[str, PipelineSpec]:
    """Specs from a parsed YAML document ``{defaults: {...}, pipelines: {<name>: {...}}}``, each
    pipeline merged over the defaults (module docstring) and validated."""
    if not isinstance(document, Mapping) or not isinstance(document.get("pipelines"), Mapping):
        raise PipelineSpecError(
            f"{source}: expected a top-level 'pipelines:' mapping of pipeline name to spec."
        )
    unknown = sorted(set(document) - set(_TOP_LEVEL_KEYS))
    if unknown:
        raise PipelineSpecError(
            f"{source}: unknown top-level keys {unknown}; only {list(_TOP_LEVEL_KEYS)}."
        )
    defaults = _checked_defaults(document.get("defaults"), source)
    specs: dict[str, PipelineSpec] = {}
    for name, body in document["pipelines"].items():
        if not isinstance(body, Mapping):
            raise PipelineSpecError(f"{source}: pipeline {name!r}: expected a mapping of fields.")
        if "name" in body and body["name"] != name:
            raise PipelineSpecError(
                f"{source}: pipeline {name!r}: name: {body['name']!r} differs from its key."
            )
        try:
            specs[str(name)] = PipelineSpec.model_validate(
                {**_merged(defaults, body), "name": name}
            )
        except ValidationError as exc:
            raise PipelineSpecError(
                f"{source}: pipeline {name!r}: "
                + "; ".join(_describe(e, body, defaults) for e in exc.errors())
            ) from None
    return specs


def _checked_defaults(defaults: Any, source: str) -> Mapping[str, Any]:
    """The ``defaults:`` block, its keys checked here so that a typo is blamed on it and not on
    every pipeline; its values are validated with each pipeline, once merged."""
    if defaults is None:
        return {}
    if not isinstance(defaults, Mapping):
        raise PipelineSpecError(f"{source}: defaults: expected a mapping of spec fields.")
    per_pipeline = sorted(set(defaults) & _PER_PIPELINE_FIELDS)
    if per_pipeline:
        raise PipelineSpecError(
            f"{source}: defaults: {per_pipeline} belong to each pipeline; they have no default."
        )
    unknown = _unknown_fields(PipelineSpec, defaults)
    if unknown:
        raise PipelineSpecError(f"{source}: defaults: unknown fields {unknown} (a typo?)")
    return defaults


def _unknown_fields(model: type[BaseModel], body: Mapping[str, Any], at: str = "") -> list[str]:
    """Keys of ``body`` (at any depth of nested models) that ``model`` does not have."""
    unknown: list[str] = []
    for key, value in body.items():
        field = model.model_fields.get(key)
        if field is None:
            unknown.append(f"{at}{key}")
            continue
        # A nested model, or one in ``Model | None``.
        for kind in (field.annotation, *get_args(field.annotation)):
            if (
                isinstance(kind, type)
                and issubclass(kind, BaseModel)
                and isinstance(value, Mapping)
            ):
                unknown += _unknown_fields(kind, value, f"{at}{key}.")
    return unknown


def _merged(defaults: Mapping[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` over ``defaults``: mappings merge key by key, any other value replaces."""
    merged = dict(defaults)
    for key, value in body.items():
        default = merged.get(key)
        if isinstance(default, Mapping) and isinstance(value, Mapping):
            merged[key] = _merged(default, value)
        else:
            merged[key] = value
    return merged


def pipelines_file() -> Path:
    """The specs file: ``$STREAMOPS_PIPELINES_FILE`` when set, else the project's pipelines.yaml."""
    override = os.environ.get(PIPELINES_FILE_ENV)
    return Path(override).expanduser() if override else PIPELINES_FILE


def load_specs(path: Path | None = None) -> dict[str, PipelineSpec]:
    """Every pipeline of :func:`pipelines_file` (or ``path``), validated; reads that file only."""
    path = pipelines_file() if path is None else path
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PipelineSpecError(
            f"Cannot read the pipeline specs {path}: {exc.strerror or exc}. It lists every "
            "supervised pipeline; restore it from git or point at another file."
        ) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PipelineSpecError(f"{path} is not valid YAML: {exc}") from None
    return parse_specs(document, source=str(path))


def load_spec(name: str, path: Path | None = None) -> PipelineSpec:
    specs = load_specs(path)
    if name not in specs:
        raise PipelineSpecError(
            f"No pipeline {name!r} in {path or pipelines_file()}; known: {sorted(specs)}."
        )
    return specs[name]


def _describe(
    error: Mapping[str, Any], body: Mapping[str, Any], defaults: Mapping[str, Any]
) -> str:
    location = tuple(error.get("loc", ()))
    field = ".".join(str(part) for part in location) or "(spec)"
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if error.get("type") == "extra_forbidden":
        message = "unknown field (a typo?)"
    if location and not _holds(body, location) and _holds(defaults, location):
        message += " (the value comes from 'defaults')"
    return f"{field}: {message}"


def _holds(document: Mapping[str, Any], location: tuple[Any, ...]) -> bool:
    """Whether ``document`` sets the field at ``location`` (a mapping path; list items count as
    their list)."""
    for part in location:
        if not isinstance(document, Mapping):
            return isinstance(part, int)  # an item of a list the document sets
        if part not in document:
            return False
        document = document[part]
    return True
