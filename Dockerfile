# syntax=docker/dockerfile:1.7
# One image for every streamops process in containers: the Airflow api-server, scheduler,
# dag-processor and triggerer, the init jobs, and Spark drivers and executors on Kubernetes.
# Build: docker build -t streamops:0.1.0 .   (docs/deploy.md; tests/deploy check this file)

# The same Python minor as the project's venv, on the Debian release the local stack targets.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
# Must equal the pyspark pin in constraints.txt: the connector is built for that Spark.
ARG SPARK_VERSION=4.2.0

# --- Spark's Kafka connector, resolved with Maven exactly as `streamops install` does ----------
FROM ${PYTHON_IMAGE} AS connector-jars
ARG SPARK_VERSION
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless maven \
    && rm -rf /var/lib/apt/lists/*
COPY streamops/maven/spark-kafka-connector.pom.xml /build/pom.xml
# The artifact list is installer.SPARK_CONNECTOR_ARTIFACTS (a test keeps the two equal): Spark,
# Scala and Hadoop already ship inside pyspark/jars.
RUN --mount=type=cache,target=/root/.m2 \
    mvn -q -B -f /build/pom.xml dependency:copy-dependencies \
        -DoutputDirectory=/jars -DincludeScope=runtime -Dspark.version=${SPARK_VERSION} \
        -DincludeArtifactIds=spark-sql-kafka-0-10_2.13,spark-token-provider-kafka-0-10_2.13,kafka-clients,commons-pool2 \
    && test -f "/jars/spark-sql-kafka-0-10_2.13-${SPARK_VERSION}.jar" \
    && echo ok > /jars/.complete

# --- the project and its pinned dependencies: two virtual environments (ADR 0006) -------------
# Airflow's (Airflow, the Spark provider and its pyspark-client, the core) and Spark's (PySpark at
# the JVM's version, pandas, pyarrow, the core), as `streamops install` makes them locally:
# pyspark and pyspark-client write the same folder, so they never share an environment.
FROM ${PYTHON_IMAGE} AS python-base
# The `mariadb` package builds against MariaDB Connector/C.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libmariadb-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# .dockerignore admits only what the package needs, so this layer changes only with the code.
COPY . /src

FROM python-base AS airflow-build
# Airflow's PostgreSQL drivers (psycopg2-binary, asyncpg) are in the `airflow` extra.
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/streamops/venv \
    && /opt/streamops/venv/bin/pip install --disable-pip-version-check --upgrade pip \
    && /opt/streamops/venv/bin/pip install --disable-pip-version-check -c constraints.txt ".[airflow]" \
    && /opt/streamops/venv/bin/pip check

FROM python-base AS spark-build
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/streamops/spark-venv \
    && /opt/streamops/spark-venv/bin/pip install --disable-pip-version-check --upgrade pip \
    && /opt/streamops/spark-venv/bin/pip install --disable-pip-version-check -c constraints.txt ".[spark]" \
    && /opt/streamops/spark-venv/bin/pip check

# --- runtime ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG SPARK_VERSION
LABEL org.opencontainers.image.title="streamops" \
      org.opencontainers.image.description="Airflow 3 and Spark Structured Streaming for streamops" \
      org.opencontainers.image.licenses="Apache-2.0"
# JRE 17 for Spark, the client library the `mariadb` package links against, tini as PID 1 so
# spark-submit's children are reaped and signals reach the process.
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless libmariadb3 tini procps \
    && rm -rf /var/lib/apt/lists/*
# uid 50000 and gid 0 as in Airflow's images: runs under OpenShift's random uids too.
RUN useradd --uid 50000 --gid 0 --home-dir /opt/airflow --create-home --shell /bin/bash streamops

ENV PATH=/opt/streamops/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AIRFLOW_HOME=/opt/airflow \
    SPARK_HOME=/opt/streamops/spark-venv/lib/python3.11/site-packages/pyspark \
    PYSPARK_PYTHON=/opt/streamops/spark-venv/bin/python \
    STREAMOPS_VENV_DIR=/opt/streamops/venv \
    STREAMOPS_SPARK_VENV_DIR=/opt/streamops/spark-venv \
    STREAMOPS_CACHE_DIR=/opt/streamops/cache \
    STREAMOPS_STATE_DIR=/opt/streamops/state \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/streamops/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/streamops/plugins \
    STREAMOPS_PIPELINES_FILE=/opt/streamops/pipelines.yaml

COPY --from=airflow-build /opt/streamops/venv /opt/streamops/venv
COPY --from=spark-build /opt/streamops/spark-venv /opt/streamops/spark-venv
# Where Settings.spark_kafka_jars_dir() looks: <cache_dir>/spark-kafka-<pyspark version>.
COPY --from=connector-jars /jars /opt/streamops/cache/spark-kafka-${SPARK_VERSION}
COPY dags /opt/streamops/dags
COPY plugins /opt/streamops/plugins
# The pipeline specs: the supervision DAGs and every job's driver (its query names and checkpoints,
# streamops.supervision.spec) read them; outside a source checkout they are found by the variable.
COPY pipelines.yaml /opt/streamops/pipelines.yaml

# Spark on Kubernetes starts driver and executor pods from this image with the first argument
# `driver` or `executor`, as Spark's own images do; anything else runs as given.
COPY --chmod=0755 <<'EOF' /usr/local/bin/streamops-entrypoint
#!/bin/bash
set -euo pipefail
SPARK_CLASSPATH="${SPARK_CONF_DIR:-$SPARK_HOME/conf}:${SPARK_HOME}/jars/*${SPARK_EXTRA_CLASSPATH:+:$SPARK_EXTRA_CLASSPATH}"
case "${1:-}" in
  driver)
    shift
    exec "$SPARK_HOME/bin/spark-submit" \
      --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS}" --deploy-mode client "$@"
    ;;
  executor)
    shift
    mapfile -t java_opts < <(env | grep '^SPARK_JAVA_OPT_' | sort -t_ -k4 -n | sed 's/^[^=]*=//')
    exec java "${java_opts[@]}" -Xms"${SPARK_EXECUTOR_MEMORY}" -Xmx"${SPARK_EXECUTOR_MEMORY}" \
      -cp "${SPARK_CLASSPATH}" org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "${SPARK_DRIVER_URL}" --executor-id "${SPARK_EXECUTOR_ID}" \
      --cores "${SPARK_EXECUTOR_CORES}" --app-id "${SPARK_APPLICATION_ID}" \
      --hostname "${SPARK_EXECUTOR_POD_IP}" --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID}" \
      --podName "${SPARK_EXECUTOR_POD_NAME}"
    ;;
  *)
    exec "$@"
    ;;
esac
EOF

RUN mkdir -p /opt/streamops/state /opt/airflow/logs /opt/airflow/auth \
    && chown -R 50000:0 /opt/streamops/state /opt/airflow \
    && chmod -R g=u /opt/streamops/state /opt/airflow

USER 50000:0
WORKDIR /opt/airflow
EXPOSE 8080

# The default command is the api-server, so the default health check asks its health endpoint;
# compose and the chart give the other components their own (`airflow jobs check`).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=5 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('AIRFLOW__API__PORT', '8080') + '/api/v2/monitor/health', timeout=8)"]

ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/streamops-entrypoint"]
CMD ["airflow", "api-server"]
