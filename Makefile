# The project's commands. Every target installs what it needs from the lock file first,
# from nothing but python3 (3.11+) on the machine.
PYTHON ?= python3
VENV := .venv
TOOLS := .tools
UV_VERSION := 0.13.8
UV := $(TOOLS)/bin/uv
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install check test test-compose browser docker demo up down status clean bench bench-celery \
	compose-bases compose-demo compose-env

install: $(VENV)/.installed

$(UV):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "error: $(PYTHON) is older than 3.11; run make PYTHON=python3.11 (or newer)"; exit 1; }
	@$(PYTHON) -m venv $(TOOLS) || \
		{ echo "error: '$(PYTHON) -m venv' failed; install venv (Debian/Ubuntu: apt install python3-venv)"; exit 1; }
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.installed: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --compile-bytecode --python $(PYTHON)
	@touch $@

## Lint, format and types.
check: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

## The whole test suite (what CI runs), after the checks and with a browser for the UI tests.
## The compose demo's test is not in it: make test-compose.
test: check browser
	$(VENV)/bin/pytest

## A system Chromium for the browser tests (Playwright drives it; it downloads no browser).
## Installed with apt-get when missing, as root or with non-interactive sudo. When that
## cannot be done, say what to install: the browser tests then fail, naming it again.
BROWSERS := chromium chromium-browser google-chrome google-chrome-stable
browser:
	@if [ -n "$$SHIPPING_CHROMIUM" ] && [ -x "$$SHIPPING_CHROMIUM" ]; then exit 0; fi; \
	for name in $(BROWSERS); do command -v $$name >/dev/null 2>&1 && exit 0; done; \
	if command -v apt-get >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then sudo=""; \
		elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; \
		else sudo=none; fi; \
		if [ "$$sudo" != none ]; then \
			echo "browser tests: no Chromium found; installing Debian's chromium with apt-get"; \
			$$sudo apt-get update -qq && \
			$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null && \
			command -v chromium >/dev/null 2>&1 && exit 0; \
			echo "browser tests: 'apt-get install -y chromium' failed (output above)"; \
		fi; \
	fi; \
	echo "browser tests: no Chromium found and it could not be installed here."; \
	echo "  Install one (Debian/Ubuntu as root: apt-get install chromium), or set"; \
	echo "  SHIPPING_CHROMIUM=/path/to/chromium. The browser tests fail without it."

## Docker for the compose demo and its test: Debian's docker.io, docker-compose and debootstrap
## (local base images), installed with apt-get when docker is missing, as root or with
## non-interactive sudo. When that cannot be done, say what to install: the test then fails.
docker:
	@if command -v docker >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1; then exit 0; fi; \
	if command -v apt-get >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then sudo=""; \
		elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; \
		else sudo=none; fi; \
		if [ "$$sudo" != none ]; then \
			echo "compose test: no docker or debootstrap; installing docker.io docker-compose debootstrap"; \
			$$sudo apt-get update -qq && \
			$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io docker-compose debootstrap >/dev/null && \
			exit 0; \
			echo "compose test: apt-get install failed (output above)"; \
		fi; \
	fi; \
	echo "compose test: Docker could not be installed here. Install it (Debian/Ubuntu as root:"; \
	echo "  apt-get install docker.io docker-compose debootstrap). The compose test fails without it."

## Install, start the stack, post sample orders, print the result, stop the stack.
demo: install
	$(VENV)/bin/python -m shipping.ops.demo

## The docker-compose stack end to end on a real Docker engine (docs/docker-compose.md):
## build, up with 2 Celery workers, sample orders over REST, a worker killed mid-order,
## down -v. Uses the official base images when they can be pulled, else builds local ones.
compose-demo: install docker
	$(VENV)/bin/python -m shipping.ops.compose_demo --start-dockerd $(ARGS)

## Rewrite compose's Airflow settings (docker/airflow.env, docker/airflow-worker.env) from
## shipping/ops/airflow_settings.py, the function the local stack uses (docs/configuration.md).
compose-env: install
	$(VENV)/bin/python -m shipping.ops.airflow_settings

## Local base images (Debian bookworm by debootstrap, Debian's PostgreSQL and Redis) for an
## engine that cannot pull the official ones; needs root, debootstrap and docker.
compose-bases:
	docker/base/build.sh

## The compose demo's e2e test, deselected from make test (docs/docker-compose.md: it takes
## 3 to 15 minutes on this 2-core machine, with the suite's 14 too close to its 30).
test-compose: install docker
	$(VENV)/bin/pytest -m compose tests/e2e/test_compose_demo.py

## Start / stop / show the local stack (background, 127.0.0.1 only).
## Celery mode: make up EXECUTOR=celery WORKERS=N (on a running Celery stack, WORKERS=N
## adds workers or gracefully stops the extra ones).
up: install
	$(if $(EXECUTOR),SHIPPING_EXECUTOR=$(EXECUTOR)) $(if $(WORKERS),SHIPPING_CELERY_WORKERS=$(WORKERS)) \
		$(VENV)/bin/python -m shipping.ops.stack up

down: install
	$(VENV)/bin/python -m shipping.ops.stack down

status: install
	$(VENV)/bin/python -m shipping.ops.stack status

## The comparison benchmark on its own stack (docs/benchmark.md); ARGS="--sizes 10 100 --repeat 3".
bench: install
	$(VENV)/bin/python -m shipping.ops.bench $(ARGS)

## Burst throughput across 1 and 2 Celery workers (docs/benchmark-celery.md); ARGS="--quick".
bench-celery: install
	$(VENV)/bin/python -m shipping.ops.bench_celery $(ARGS)

clean: down
	rm -rf $(VENV) $(TOOLS) .stack
