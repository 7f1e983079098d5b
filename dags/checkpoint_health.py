"""Every five minutes: is every streaming checkpoint committing, caught up with Kafka and whole?
(docs/maintenance.md)"""

from streamops_airflow.dag_factory import CheckpointHealthDagSpec, build_checkpoint_health_dag

dag = build_checkpoint_health_dag(CheckpointHealthDagSpec(dag_id="streamops_checkpoint_health"))
