"""`streamops soak`: a whole-platform soak against the running platform, with probes.

While the platform that `make up` started runs (every pipeline under Airflow's supervision,
generators on, the dashboard), the soak sends a few tagged probe records every probe interval and
measures how long each output takes to show them (:mod:`streamops.soak.probes`), samples what each
component costs in CPU and memory and how healthy each pipeline is
(:mod:`streamops.soak.sampler`), and writes a report with targets, pass or fail each
(:mod:`streamops.soak.report`, charts in :mod:`streamops.soak.plots`). :mod:`streamops.soak.run`
holds one run; :mod:`streamops.soak.cli` the command, and ``benchmarks/bench_soak.py`` runs the
same soak as a benchmark of ``streamops bench``.
"""
