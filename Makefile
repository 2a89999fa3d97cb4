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

.PHONY: install check test demo up down status clean bench

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

## The whole test suite (what CI runs), after the checks.
test: check
	$(VENV)/bin/pytest

## Install, start the stack, post sample orders, print the result, stop the stack.
demo: install
	$(VENV)/bin/python -m shipping.demo

## Start / stop / show the local stack (background, 127.0.0.1 only).
up: install
	$(VENV)/bin/python -m shipping.stack up

down: install
	$(VENV)/bin/python -m shipping.stack down

status: install
	$(VENV)/bin/python -m shipping.stack status

## The comparison benchmark on its own stack (docs/benchmark.md); ARGS="--sizes 10 100 --repeat 3".
bench: install
	$(VENV)/bin/python -m shipping.bench $(ARGS)

clean: down
	rm -rf $(VENV) $(TOOLS) .stack
