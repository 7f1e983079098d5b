"""The local stack: every service of the platform, started in dependency order on loopback."""

from __future__ import annotations

import time
from collections.abc import Callable

from streamops.config import Settings
from streamops.errors import StreamopsError
from streamops.stack.airflow import AIRFLOW_COMPONENTS, AirflowDatabase
from streamops.stack.base import Component, ComponentStatus, Health
from streamops.stack.dashboard import Dashboard
from streamops.stack.generator import GENERATOR_COMPONENTS, TopicGenerator
from streamops.stack.kafka import Kafka
from streamops.stack.mariadb import MariaDB
from streamops.stack.pipelines import pipeline_components, supervise
from streamops.stack.postgres import PostgreSQL
from streamops.stack.redis import Redis

__all__ = ["Component", "ComponentStatus", "Health", "Stack"]

Reporter = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


class Stack:
    """All components, in the order `up` starts them (and the reverse order `down` stops them)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # The dashboard needs only Redis; it starts with the services so `up` prints its URL.
        # PostgreSQL holds Airflow's metadata, so it starts before and stops after Airflow.
        self.services: list[Component] = [
            MariaDB(settings),
            Redis(settings),
            PostgreSQL(settings),
            Kafka(settings),
            Dashboard(settings),
        ]
        self.airflow: list[Component] = [cls(settings) for cls in AIRFLOW_COMPONENTS]
        # Airflow runs the jobs; these components find, watch and stop them.
        self.pipelines = pipeline_components(settings)
        self.generators: list[TopicGenerator] = [cls(settings) for cls in GENERATOR_COMPONENTS]

    @property
    def components(self) -> list[Component]:
        # `down` goes in reverse: Airflow stops before the jobs, so no supervisor relaunches a job
        # that `down` has just stopped.
        return [*self.services, *self.pipelines, *self.airflow, *self.generators]

    def component(self, name: str) -> Component:
        for component in self.components:
            if component.name == name:
                return component
        names = ", ".join(c.name for c in self.components)
        raise StreamopsError(f"Unknown component {name!r}. The components are: {names}.")

    def up(
        self,
        *,
        with_airflow: bool = True,
        with_pipelines: bool = False,
        with_generator: bool = False,
        report: Reporter = _quiet,
    ) -> None:
        """Start what is not running, wait for health, then create topics and apply the schema.

        A failure stops nothing that was already running before this call, and stops the
        component that failed, so the state folder never holds a half-started service.
        """
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        # PostgreSQL holds nothing but Airflow's metadata: without Airflow it is not started.
        services = [c for c in self.services if with_airflow or not isinstance(c, PostgreSQL)]
        for component in services:
            self._start(component, report)
        for component in services:
            component.after_start()
            report(f"{component.name}: ready")
        if with_airflow:
            database = AirflowDatabase(self.settings)
            database.migrate(report)
            database.ensure_spark_connection(report)
            for component in self.airflow:
                self._start(component, report, wait=False)
            for component in self.airflow:
                component.wait_healthy()
                report(f"{component.name}: healthy")
        if with_pipelines and with_airflow:
            # Supervised: Airflow's DAGs launch the jobs; `up` enables them and waits (bounded).
            supervise(self.settings, self.pipelines, report)
        if with_generator:
            seed = int(time.time())
            for component in self.generators:
                component.seed = seed
                self._start(component, report)

    def _start(self, component: Component, report: Reporter, *, wait: bool = True) -> bool:
        started = component.start()
        report(f"{component.name}: {'starting' if started else 'already running'}")
        if wait:
            health = component.wait_healthy()
            report(f"{component.name}: healthy ({health.detail})")
        return started

    def down(self, report: Reporter = _quiet) -> None:
        """Stop every component gracefully, newest first; data stays in the state folder."""
        for component in reversed(self.components):
            if component.stop():
                report(f"{component.name}: stopped")

    def status(self) -> list[ComponentStatus]:
        return [c.status() for c in self.components]
