"""Hourly: roll revenue windows up (5 s -> 1 min -> 1 h), reconcile late windows, apply retention
and ANALYZE/OPTIMIZE, verifying totals around every step, and expire the Parquet archive's old
days (docs/maintenance.md)."""

from streamops_airflow.dag_factory import CompactionDagSpec, build_compaction_dag

dag = build_compaction_dag(CompactionDagSpec(dag_id="streamops_mariadb_compaction"))
