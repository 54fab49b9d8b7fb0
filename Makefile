# npsloop — the two commands are `make run` and `make test`; everything else is a helper.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.installed
MEMBERS := shared services/ingest services/alerts services/digest

.PHONY: help install run test lint typecheck pytest bench-ingest bench-alerts lock clean infra-stop

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(PY):
	python3 -m venv $(VENV)

$(UV): | $(PY)
	@# uv comes from PyPI into the venv itself, so nothing needs to be on the machine beyond python3.
	$(PY) -m pip install --quiet --disable-pip-version-check "uv==0.13.9"

$(STAMP): requirements-dev.txt pyproject.toml shared/pyproject.toml services/*/pyproject.toml | $(UV)
	$(UV) pip sync --quiet --python $(PY) --require-hashes requirements-dev.txt
	$(UV) pip install --quiet --python $(PY) --no-deps --no-build-isolation $(addprefix -e ,$(MEMBERS))
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install pinned, hash-checked dependencies

run: install ## Start PostgreSQL, Kafka, a mail sink and every service locally (Ctrl-C stops all)
	$(PY) -m deploy.local.runner

test: install lint typecheck pytest ## ruff, mypy --strict and the whole test suite on real Kafka + PostgreSQL

lint: install ## ruff format check + lint
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

typecheck: install ## mypy --strict
	$(VENV)/bin/mypy shared/src services/ingest/src services/alerts/src services/digest/src tests bench deploy

pytest: install ## The test suite (starts its own Kafka and PostgreSQL)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench-ingest: install ## Ingest throughput/latency vs a bare ASGI app, measured in one run
	@command -v wrk >/dev/null || apt-get install -y wrk
	$(PY) -m bench.ingest $(BENCH_ARGS)

bench-alerts: install ## Alerts end-to-end latency and delivery throughput
	$(PY) bench/alerts.py $(BENCH_ARGS)

lock: ## Re-resolve and re-pin requirements*.txt (exact versions + hashes, no index URLs)
	uv lock --quiet
	uv export --quiet --format requirements-txt --no-emit-workspace --no-dev --frozen -o requirements.txt
	uv export --quiet --format requirements-txt --no-emit-workspace --all-groups --frozen -o requirements-dev.txt

infra-stop: ## Stop a Kafka/PostgreSQL left running under .data/
	-deploy/local/kafka.sh stop
	-deploy/local/postgres.sh stop

clean: infra-stop ## Remove the venv and local data (the Kafka jar cache is kept)
	rm -rf $(VENV) .data .mypy_cache .ruff_cache .pytest_cache
