"""Daily: train the vitals anomaly model on the last week of vitals_readings, as a Spark batch job
launched through the Spark provider; the running vitals stream picks the new version up without a
restart (docs/maintenance.md)."""

from streamops_airflow.dag_factory import ModelTrainingDagSpec, build_model_training_dag

dag = build_model_training_dag(ModelTrainingDagSpec(dag_id="streamops_vitals_model_training"))
