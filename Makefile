# tenant-backups: `make demo` and `make test` set everything up from a fresh clone.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
SERVICES_ENV := var/services.env
TEST_ENV := var/test.env
# Local runs only: production sets DJANGO_SECRET_KEY and leaves DEBUG off.
export DJANGO_DEBUG ?= 1
WITH_SERVICES = set -a && . ./$(SERVICES_ENV) && set +a
WITH_TEST_ENV = $(WITH_SERVICES) && $(PY) scripts/test_env.py > $(TEST_ENV) && set -a && . ./$(TEST_ENV) && set +a
# The S3 tests' server: radosgw (scripts/radosgw.py installs and starts it; CI always uses it), or moto where
# radosgw cannot run (TEST_S3=moto: the tests of signatures, links and encryption then do not run).
export TEST_S3 ?= radosgw
S3_TEST_ENV := var/radosgw.env
WITH_TEST_S3 = case "$(TEST_S3)" in \
	radosgw) $(PY) scripts/radosgw.py up --env-file $(S3_TEST_ENV) && set -a && . ./$(S3_TEST_ENV) && set +a ;; \
	moto) echo "S3 server: moto (TEST_S3=moto): tests of signatures, links and encryption will not run" ;; \
	*) echo "TEST_S3=$(TEST_S3) is not radosgw or moto."; exit 2 ;; esac

.PHONY: help install services demo test chaos bench lint manage worker beat web web-prod flower stop-services clean
# `make test` runs everything, the chaos suite included; `make chaos` only that suite.
TEST_MARKERS ?=

help:
	@echo "make demo   - set up everything, back up every demo clinic through Celery, print the results"
	@echo "make test   - set up everything and run the whole test suite (the chaos suite included)"
	@echo "make chaos  - only the chaos suite: kills, restarts and outages against private servers"
	@echo "make bench  - run the benchmarks in bench/"
	@echo "make manage ARGS=\"list_backups clinica_demo\" - any management command, with the local servers"
	@echo "make worker | beat | web | flower - run one process in the foreground"
	@echo "make web-prod - the web process as deployed: gunicorn with project/gunicorn.conf.py"

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null || \
		{ echo "Python 3.11 or newer is required: install it, or run make PYTHON=/path/to/python3.11"; exit 2; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || \
		{ echo "Could not create $(VENV): install the venv module (apt-get install python3-venv)"; exit 2; }
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt || \
		{ echo "pip could not install requirements-dev.txt: check your access to PyPI"; exit 2; }
	@touch $(STAMP)

install: $(STAMP)

services: install
	@mkdir -p var
	@$(PY) scripts/services.py up --env-file $(SERVICES_ENV)

demo: services
	@$(WITH_SERVICES) && $(PY) manage.py migrate_schemas -v0 \
		&& $(PY) manage.py create_demo_clinics \
		&& $(PY) manage.py run_demo

test: services
	@$(WITH_TEST_ENV) && $(WITH_TEST_S3) && $(PY) scripts/services.py dropdb $$TEST_DATABASE_NAME \
		&& $(PY) scripts/services.py createdb $$TEST_DATABASE_NAME \
		&& rm -rf var/test-backups \
		&& $(PY) -m pytest $(if $(TEST_MARKERS),-m "$(TEST_MARKERS)") $(PYTEST_ARGS)

chaos:
	@$(MAKE) --no-print-directory test TEST_MARKERS=chaos PYTEST_ARGS="$(or $(PYTEST_ARGS),tests/chaos)"

bench: services
	@$(WITH_SERVICES) && $(PY) bench/run.py $(BENCH_ARGS)

manage: services
	@$(WITH_SERVICES) && $(PY) manage.py $(ARGS)

lint: install
	@$(VENV)/bin/ruff check .

worker: services
	@$(WITH_SERVICES) && $(VENV)/bin/celery -A project worker -Q backups.dispatch,backups.dump,backups.dump.priority,backups.record,backups.housekeeping,backups.restore -c 2 -E -l INFO

beat: services
	@$(WITH_SERVICES) && $(VENV)/bin/celery -A project beat -l INFO

web: services
	@$(WITH_SERVICES) && $(PY) manage.py runserver 127.0.0.1:8000

web-prod: services
	@$(WITH_SERVICES) && $(VENV)/bin/gunicorn project.wsgi:application -c project/gunicorn.conf.py

flower: services
	@$(WITH_SERVICES) && $(PY) -m project.flower --address=127.0.0.1 --port=5555

stop-services:
	@test ! -x $(PY) || $(PY) scripts/services.py down --env-file $(SERVICES_ENV)
	@test ! -x $(PY) || $(PY) scripts/radosgw.py down

clean: stop-services
	rm -rf var $(VENV)
