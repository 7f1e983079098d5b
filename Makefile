# The two commands of the README: `make up` and `make test`. Each installs what is missing first.
PYTHON ?= python3
VENV ?= .venv
# Spark's own environment (ADR 0006): PySpark, pandas, pyarrow and the core, no Airflow.
SPARK_VENV ?= .venv-spark
STREAMOPS = $(VENV)/bin/streamops
# Tests run their own stack: its own state folder and ports, so a running `make up` is untouched.
TEST_ENV = STREAMOPS_STATE_DIR=$(CURDIR)/.streamops-test

.PHONY: install up down status test test-tools test-unit lint typecheck bench soak chaos compose-up

install:
	$(PYTHON) -m streamops install

up: install
	$(STREAMOPS) up --with-generator

down:
	$(STREAMOPS) down

status:
	$(STREAMOPS) status

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck:
	$(VENV)/bin/mypy

# Tools only the tests use, built once and cached (helm for the chart tests: a few minutes from
# source the first time), so the suite's own time is the tests'.
test-tools: install
	$(VENV)/bin/python -m tests.deploy.helm_binary

# Each environment runs its half of the suite (tests/conftest.py sorts the files): Airflow's
# first, then Spark's. Each run fails on its own, "no tests ran" (exit 5) included.
test: install test-tools lint typecheck
	$(TEST_ENV) $(VENV)/bin/python -m pytest tests --durations=25
	$(TEST_ENV) $(SPARK_VENV)/bin/python -m pytest tests --durations=25

test-unit: install
	$(VENV)/bin/python -m pytest tests/unit
	$(SPARK_VENV)/bin/python -m pytest tests/unit

# The benchmarks measure one part at a time on a quiet stack; the soak needs the whole platform.
bench: install
	$(STREAMOPS) up --no-airflow
	$(STREAMOPS) bench --skip soak

soak: up
	$(STREAMOPS) soak --duration 30m

chaos: up
	$(STREAMOPS) chaos --duration 30m

# docker compose: its keys and passwords are generated on the first run into
# deploy/compose.secrets.env (0600, git-ignored) and kept afterwards; plain python3 is enough.
compose-up:
	$(PYTHON) -m streamops compose-secrets
	docker compose up -d --build
