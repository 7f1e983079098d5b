"""The chaos suite: faults injected at random times into the whole running platform, and the
proof that nothing was lost, nothing was counted twice and the supervisor told the truth.

- :mod:`streamops.chaos.faults`: what can be broken (a job's shell, JVM, driver or Python
  worker; Airflow's scheduler, triggerer or dag-processor; Kafka, MariaDB, Redis; kill points
  inside the sinks) and how;
- :mod:`streamops.chaos.verdicts`: the supervisor's word sampled every second against the process
  table and the heartbeats;
- :mod:`streamops.chaos.truth`: the outputs checked against the topics at the end;
- :mod:`streamops.chaos.run`: one run, its schedule of faults and its report;
- :mod:`streamops.chaos.report` and :mod:`streamops.chaos.plots`: tables and charts of a report;
- :mod:`streamops.chaos.cli`: ``streamops chaos``.
"""
