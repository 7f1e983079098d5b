"""Job entry points, one module per pipeline (``spark_jobs.jobs.<pipeline>``).

Which pipelines exist and which queries each job starts is declared in the pipeline specs
(``pipelines.yaml``, read by ``streamops.supervision.spec.load_specs``); a job takes its query names
and checkpoints from there (``spark_jobs.common.runner.JobContext``).
"""
