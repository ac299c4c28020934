# goodmem-operator: the two commands a fresh machine needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo reliability test test-unit test-integration test-e2e crd lint bench bench-smoke bench-fairness bench-connections cluster-up cluster-down image clean

# The operator (with its test tools) and, beside it, the development distribution in dev/ (emulator, local control plane).
$(VENV)/.installed: pyproject.toml dev/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' -e ./dev
	touch $@

## System packages the image needs (podman, runc, mmdebstrap): installed with apt-get when missing and run as root,
## else named; SYSTEM_PACKAGES=0 skips the step (hack/install-system-packages).
install: $(VENV)/.installed
	@bash hack/install-system-packages

## The main job on the embedded default: local control plane + registry emulator + operator + examples.
## KEEP=1 leaves it running and prints how to point kubectl at it.
demo: install
	$(PY) -m goodmem_devcluster.demo $(if $(KEEP),--keep)

## The whole suite: unit, integration and end-to-end tiers (TESTS="..." passes a selection to pytest).
test: install
	bash hack/run-tests $(TESTS)

test-unit: install
	bash hack/run-tests -m unit
test-integration: install
	bash hack/run-tests -m integration
test-e2e: install
	bash hack/run-tests -m e2e

## Regenerate the CRD from the pydantic models.
crd: install
	$(PY) -m goodmem_operator.api.crd --all crds

## Strict checks (CI runs them, .pre-commit-config.yaml runs them before each commit): ruff lint and format over
## everything Python, mypy --strict on the operator, import-linter's layer contracts.
LINT_PATHS := operator dev tests bench hack
lint: install
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

## Benchmarks (issue #7): full size, results to BENCHMARKS.md; bench-smoke is the small run the suite also does.
bench: install
	$(PY) bench/run.py --write BENCHMARKS.md
bench-smoke: install
	$(PY) bench/run.py --smoke
## The fair-share phase alone (issue #13): replaces just the "Fair share" section of BENCHMARKS.md.
bench-fairness: install
	$(PY) bench/run.py --only fairness --write BENCHMARKS.md
## The connections phase alone (issue #15): replaces just the "Connections" section of BENCHMARKS.md.
bench-connections: install
	$(PY) bench/run.py --only connections --write BENCHMARKS.md

## Reliability scenarios (issue #8) at full size: JSON summaries to tests/reliability/results/ (committed), then
## RELIABILITY.md generated from them (CI runs a reduced count in `make test`; its summaries go to build/reliability/).
reliability: install
	GOODMEM_RELIABILITY_FULL=1 bash hack/run-tests -m reliability -s
	$(PY) -m tests.reliability.report

## The container image (Dockerfile), with podman or Docker (goodmem_devcluster.image). BASE=auto (default: the public
## Python image when Docker Hub answers, else a Debian base made by mmdebstrap, cached), public, debian or an image
## reference; IMAGE=name:tag (default goodmem-operator:<version>). Without an engine it says what is missing and fails.
image: install
	$(PY) -m goodmem_devcluster.image $(if $(IMAGE),--tag $(IMAGE)) $(if $(BASE),--base $(BASE))

cluster-up: install
	$(PY) -m goodmem_devcluster up
cluster-down: install
	$(PY) -m goodmem_devcluster down

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
