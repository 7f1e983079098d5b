"""Supervised streaming pipelines: specs, the spark-submit command, restart policy and leases.

Pure parts (:mod:`.spec`, :mod:`.submit`, :mod:`.restart`) do no I/O beyond reading
``pipelines.yaml``; :mod:`.lease` talks to MariaDB. The Airflow side (hook, trigger, operator,
supervision DAG factory) lives in ``plugins/streamops_airflow`` and builds on these.
"""
