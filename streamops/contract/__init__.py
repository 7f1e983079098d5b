"""What the Spark jobs and the rest of the platform share, in one place and free of Spark.

Both sides import from here and nothing else of each other: the core (CLI, stack, dashboard,
maintenance, supervision) never imports ``spark_jobs`` or ``pyspark``, and the jobs read the
same names the dashboard and the checks read. See docs/adr/0006-layers-and-environments.md.
"""
