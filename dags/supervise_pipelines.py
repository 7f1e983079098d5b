"""One supervision DAG per pipeline spec: ``streamops_supervise_<name>`` keeps its job running.

The specs come from pipelines.yaml (or ``$STREAMOPS_PIPELINES_FILE``); reading that one file is
the only I/O at import. Add a pipeline there, not here.
"""

from streamops_airflow.dag_factory import build_supervision_dag

from streamops.supervision.spec import load_specs

for _spec in load_specs().values():
    globals()[_spec.dag_id] = build_supervision_dag(_spec)
