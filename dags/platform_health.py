"""Every five minutes: are Kafka's topics, MariaDB's schema and Redis there for the pipelines, and
is there room left on the state folder's disk (a warning from 80 % used, failed from 90 %)?"""

from streamops_airflow.dag_factory import HealthCheckSpec, build_health_dag

dag = build_health_dag(HealthCheckSpec(dag_id="streamops_platform_health"))
