"""Airflow side of streamops: DAG factories (and, as pipelines arrive, hooks and operators)."""
