# Every target does its own set-up, so `make demo` and `make test` work as the
# first command on a fresh Debian machine (as root), and change nothing where
# Docker and PostgreSQL already run.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Two workers, each taking whole test files: most tests wait on Docker or a
# subprocess, so two share two cores well; a file's tests share its fixtures.
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: install services test demo bench lint clean

install:
	@scripts/ensure-venv.sh

services: install
	@scripts/ensure-docker.sh
	@scripts/ensure-proxy.sh
	@scripts/ensure-runsc.sh
	@scripts/ensure-images.sh
	@scripts/ensure-registry.sh
	@scripts/ensure-go.sh
	@scripts/ensure-browser.sh

test: services
	@RUNNER_TEST_REQUIRE_SERVICES=1 scripts/with-postgres.sh \
		$(VENV)/bin/pytest --durations=15 $(PYTEST_ARGS)

demo: install
	@scripts/ensure-docker.sh
	@scripts/ensure-runsc.sh
	@scripts/ensure-images.sh
	@scripts/demo.sh

bench: services
	@RUNNER_TEST_REQUIRE_SERVICES=1 scripts/with-postgres.sh $(PY) -m bench

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache runner-out build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
