# anna-run developer and CI entry points. `make help` lists them.
#
# Provisioning is careful with a developer's machine: an engine that already
# answers (`docker info`) is used as it is and never stopped; a private dockerd is
# started only when none answers and we are root, and `test`/`demo`/`bench` stop
# it again only if that same make invocation started it (scripts/with-engine.sh).

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
VENV_BIN := $(abspath $(VENV))/bin
# Reinstall only when pyproject.toml changes; the editable install picks up code changes.
STAMP := $(VENV)/.anna-run-installed
PYTEST_ARGS ?=

.PHONY: help venv engine engine-down images lint test demo bench clean

help:
	@echo "make venv         $(VENV) with anna-run installed editable, extras test+hosts"
	@echo "make engine       make sure a container engine answers (scripts/engine.sh up)"
	@echo "make engine-down  stop the dockerd 'make engine' started (only that one)"
	@echo "make images       build the missing local images (anna-run/busybox, anna-run/python:3.11)"
	@echo "make lint         ruff check + ruff format --check"
	@echo "make test         engine, images, venv, pytest (PYTEST_ARGS=...); stops an engine it started"
	@echo "make demo         run examples/train with anna-run"
	@echo "make bench        bench/: ours vs the yardsticks, writes bench/RESULTS.md"
	@echo "make clean        stop our dockerd, remove $(VENV) and .cache"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@echo "[provision] venv: installing anna-run into $(VENV)"
	test -x $(VENV)/bin/python || { bash scripts/deps.sh venv && $(PYTHON) -m venv $(VENV); }
	$(VENV_BIN)/python -m pip install -q -e '.[test,hosts]'
	$(VENV_BIN)/python -m compileall -q runner  # as a wheel install would; PYTHONDONTWRITEBYTECODE may be set
	touch $@

engine:
	bash scripts/engine.sh up

engine-down:
	bash scripts/engine.sh down

images: engine
	bash scripts/images.sh

lint: venv
	$(VENV_BIN)/ruff check runner tests bench
	$(VENV_BIN)/ruff format --check runner tests bench

# One shell for engine up .. engine down, so the engine is stopped even when
# pytest fails or is interrupted; the exit status is pytest's.
test: venv
	bash scripts/deps.sh redis
	bash scripts/with-engine.sh bash -c 'bash scripts/images.sh && exec "$$@"' images-then \
		$(VENV_BIN)/pytest -q tests $(PYTEST_ARGS)

demo: venv
	bash scripts/with-engine.sh bash -c 'bash scripts/images.sh python && cd examples/train \
		&& $(VENV_BIN)/anna-run train --payload payload.json \
		&& echo "--- the result (anna-run result):" && $(VENV_BIN)/anna-run result \
		&& echo "--- the run (anna-run show):" && $(VENV_BIN)/anna-run show \
		&& echo "--- stored in: $${ANNA_RUN_STORE:-$${XDG_DATA_HOME:-$$HOME/.local/share}/anna-run}"'

bench: venv
	bash scripts/deps.sh redis
	bash scripts/with-engine.sh bash -c 'bash scripts/images.sh && exec $(VENV_BIN)/python -m bench'

clean:
	bash scripts/engine.sh down
	rm -rf $(VENV) .cache
