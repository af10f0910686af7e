# citystream: `make run` starts the local stack and replays a sample stream through it;
# `make test` runs the whole suite (unit + integration against real services).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CITYSTREAM := $(VENV)/bin/citystream
SAMPLE_COUNT ?= 2000
SAMPLE_RATE ?= 1000
BENCH_EVENTS ?= 50000
STAMP := $(VENV)/.installed

.PHONY: help setup system-deps run stop status test test-unit test-integration lint bench clean

help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP) ## create the Python environment (.venv)

system-deps: ## install Debian packages the stack needs, where absent (Java, Maven, clickhouse-server)
	@bash infra/install-system-deps.sh

run: setup ## start Kafka and the worker, replay a sample stream, print where results are
	$(CITYSTREAM) stack up
	@mkdir -p var/sample
	$(CITYSTREAM) sample --count $(SAMPLE_COUNT) --invalid-every 100 --output var/sample/latest.jsonl
	$(CITYSTREAM) replay var/sample/latest.jsonl --rate $(SAMPLE_RATE)
	$(CITYSTREAM) wait --timeout 300
	@$(CITYSTREAM) query "SELECT 'city_events' AS table, count() AS stored_rows FROM city_events UNION ALL SELECT 'citizen_appeals', count() FROM citizen_appeals UNION ALL SELECT 'dead_letters', count() FROM dead_letters"
	@echo
	@echo "Results   (chDB, var/chdb):  $(CITYSTREAM) query \"SELECT district, count() FROM city_events GROUP BY district\""
	@echo "Metrics   http://127.0.0.1:6066/metrics   (health: /healthz, /readyz)"
	@echo "Logs      var/log/worker.log, var/kafka/logs/"
	@echo "Stop      make stop"

stop: setup ## stop the worker and Kafka started by make run
	$(CITYSTREAM) stack down

status: setup ## show what is running
	$(CITYSTREAM) stack status

test: setup system-deps ## run the whole test suite (unit + integration, real services)
	$(PY) -m pytest tests -q

test-unit: setup ## unit tests only (no network)
	$(PY) -m pytest tests/unit -q

test-integration: setup system-deps ## integration tests only (starts Kafka and clickhouse-server)
	$(PY) -m pytest tests/integration -q

lint: setup ## ruff
	$(VENV)/bin/ruff check .

bench: setup ## benchmark: replay BENCH_EVENTS events, time until stored (bench-results/)
	$(CITYSTREAM) bench --events $(BENCH_EVENTS) --output bench-results/ingest.json

clean: stop ## stop everything and delete local data (var/); keeps the Kafka download
	rm -rf var
