# `make run`: the whole shop on this machine. `make test`: the whole test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DJANGO_SETTINGS_MODULE := settings
# The laptop stack writes the database, the broker's queue, mails, SMS and secrets into var/:
# the files it creates are its user's only (0600), like var/'s folders (settings/env.py).
PRIVATE := umask 077 &&

.PHONY: run test test-reliability test-alerts test-celery-canvas bench bench-quick bench-scale lint setup

$(BIN)/.installed: requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required" or 0)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

setup: $(BIN)/.installed
	$(PRIVATE) $(BIN)/python manage.py migrate --noinput
	$(PRIVATE) $(BIN)/python manage.py load_demo_catalog
	$(PRIVATE) $(BIN)/python manage.py create_demo_admin
	$(PRIVATE) $(BIN)/python manage.py setup_periodic_tasks

# Web, worker, beat and the embedded Redis, with prefixed logs; Ctrl-C stops them all.
run: setup
	@echo "The shop: http://127.0.0.1:8000"
	$(PRIVATE) DEBUG=$${DEBUG:-1} PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/honcho -f Procfile.dev start

test: $(BIN)/.installed
	$(BIN)/pytest $(PYTEST_ARGS)

# Failure injection with real processes; needs PostgreSQL (DATABASE_URL). Rewrites the
# figures in docs/reliability.md from this run.
test-reliability: $(BIN)/.installed
	$(BIN)/pytest -m reliability tests/reliability $(PYTEST_ARGS)
	$(BIN)/python -m tests.reliability.report

# Celery's own t/integration/test_canvas.py against the shop's result backend and the stock one
# (the control), on a private Redis and DATABASE_URL; downloads Celery's sdist into var/. Not in CI.
test-celery-canvas: $(BIN)/.installed
	$(BIN)/python -m tests.celery_canvas

# Performance, each figure next to its baseline in the same run (benchmarks/); writes
# docs/benchmarks.json and docs/benchmarks.svg. Needs PostgreSQL for the figures that matter.
bench: $(BIN)/.installed
	$(BIN)/python -m benchmarks --json docs/benchmarks.json --chart docs/benchmarks.svg

# The same in under 2 minutes, smaller (CI, checking a change); writes under var/.
bench-quick: $(BIN)/.installed
	$(BIN)/python -m benchmarks --quick --json var/bench-quick.json --chart var/bench-quick.svg

# Order throughput on one worker host against two, and on Redis against RabbitMQ classic and
# quorum queues, in one run (benchmarks/scale.py): network namespaces, so root, `ip` and socat;
# the machine's RabbitMQ. About 15 minutes on 2 shared cores; writes docs/scaling.json and
# var/bench-scale.md (docs/scaling.md).
bench-scale: $(BIN)/.installed
	$(BIN)/python -m benchmarks scale --json docs/scaling.json --markdown var/bench-scale.md

# The alerting rules (docs/prometheus/alerts.yml) checked and unit-tested with promtool (Debian's
# `prometheus` package; .ci/run installs it). About a second.
test-alerts:
	promtool check rules docs/prometheus/alerts.yml
	promtool test rules docs/prometheus/alerts_test.yml

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
