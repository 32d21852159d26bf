# Two commands: `make run` (set up and run everything) and `make test` (set up and run the tests).
SHELL := /bin/bash
PYTHON ?= python3.12
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Local defaults for `make run` only; anything in the environment wins.
run seed: export CRM_BASE_URL ?= http://127.0.0.1:8100
run seed: export ELEVENLABS_BASE_URL ?= http://127.0.0.1:8200
run seed: export ELEVENLABS_API_KEY ?= local-stt-simulator-key
run seed: export LLM_BASE_URL ?= http://127.0.0.1:8300/v1
run seed: export LLM_API_KEY ?= local-llm-simulator-key
run seed: export LLM_MODEL ?= sim-judge-1
run seed: export AUTH_SEED_ADMIN_EMAIL ?= admin@example.com
run seed: export AUTH_SEED_ADMIN_PASSWORD ?= admin-pass-2026
# Metrics: every process of `make run` records into one directory, emptied at each start; /metrics needs the token.
run: export PROMETHEUS_MULTIPROC_DIR ?= $(CURDIR)/.prometheus
run: export METRICS_TOKEN ?= local-metrics-token
PORT ?= 8000
export PORT

.PHONY: run test test-rabbitmq check install services migrate seed bench clean help

help:
	@echo "make run    set everything up and run web + workers + beat (+ CRM, speech-to-text and LLM simulators)"
	@echo "make test   set everything up and run the whole test suite"
	@echo "make check  lint (ruff), format check, type check (mypy), deploy checks, missing migrations"
	@echo "make bench  run the benchmarks"

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 && $(PYTHON) -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null || { \
	  echo "ERROR: $(PYTHON) (Python >= 3.12) is required. With pyenv: 'pyenv install 3.12' (this repo's .python-version selects it)."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

services: install
	$(PY) -m core.bootstrap

migrate: services
	$(PY) manage.py migrate --noinput

seed: migrate
	$(PY) manage.py seed_auth --demo
	$(PY) manage.py seed_audit_configs

run: seed
	$(PY) manage.py collectstatic --noinput --verbosity 0
	rm -rf "$$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$$PROMETHEUS_MULTIPROC_DIR"
	@echo
	@echo "  API docs  http://127.0.0.1:$(PORT)/api/docs/"
	@echo "  Admin     http://127.0.0.1:$(PORT)/admin/   ($(AUTH_SEED_ADMIN_EMAIL) / $(AUTH_SEED_ADMIN_PASSWORD))"
	@echo "  Health    curl -s http://127.0.0.1:$(PORT)/api/health"
	@echo "  Metrics   curl -s http://127.0.0.1:$(PORT)/metrics -H 'Authorization: Bearer $$METRICS_TOKEN'"
	@echo "  Try       TOKEN=\$$(curl -s -X POST http://127.0.0.1:$(PORT)/api/auth/login -H 'Content-Type: application/json' \\"
	@echo "              -d '{\"email\": \"manager@demo.example\", \"password\": \"demo-pass-2026\"}' | $(PY) -c 'import json,sys; print(json.load(sys.stdin)[\"access\"])')"
	@echo "            curl -s http://127.0.0.1:$(PORT)/api/auth/me -H \"Authorization: Bearer \$$TOKEN\""
	@echo "  Ctrl-C stops everything."
	@echo
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/honcho start -f Procfile

test: services
	$(PY) -m pytest $(PYTEST_ARGS)

# The workflow and fault suites again with RabbitMQ as the broker (quorum queues); the broker-restart test runs in
# `make test` (it stops and starts the RabbitMQ application itself).
test-rabbitmq: services
	TEST_BROKER_URL=$${TEST_BROKER_URL:-amqp://guest:guest@127.0.0.1:5672//} $(PY) -m pytest tests/workflow -m workflow --ignore tests/workflow/test_broker_restart.py $(PYTEST_ARGS)

# Production-like settings for `check --deploy` (a throw-away key; nothing runs with them).
CHECK_ENV := DEBUG=false ALLOWED_HOSTS=api.example.com SECRET_KEY=check-deploy-$(shell $(PYTHON) -c 'import secrets; print(secrets.token_hex(24))' 2>/dev/null || echo 0123456789abcdef0123456789abcdef)

check: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(CHECK_ENV) $(PY) manage.py check --deploy --fail-level WARNING
	$(PY) manage.py makemigrations --check --dry-run

bench: migrate
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) staticfiles .pytest_cache
