# The table of contents of the project. `make run` and `make test` work on a fresh clone.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out

# Lambda runs Python 3.12 (template.yaml), so the venv is made with a 3.12 whenever one is installed
# (.ci/find-python looks on PATH, then in pyenv's and uv's versions), else with python3.
# PYTHON=... given on the command line or in the environment wins.
LAMBDA_PYTHON := 3.12
ifeq ($(origin PYTHON),undefined)
PYTHON := $(or $(shell .ci/find-python $(LAMBDA_PYTHON)),python3)
PYTHON_FROM := none on PATH, in pyenv or in uv
else
PYTHON_FROM := PYTHON was given
endif
version = $(shell $(1) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
PYTHON_VERSION := $(call version,$(PYTHON))
VENV_VERSION := $(call version,$(BIN)/python)

# SAM CLI has a venv of its own (why: .ci/sam-requirements.txt). `sam build` looks for python3.12 on
# PATH, for the functions' builder and the layer's Makefile alike: the SAM venv's, made with a 3.12.
# MAKEFLAGS and PYTHON stay out of it, so that a PYTHON given here never reaches the layer's Makefile.
SAM_VENV := $(VENV)/sam
SAM := SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam
SAM_BUILD := env -u MAKEFLAGS -u MFLAGS -u PYTHON PATH="$(abspath $(SAM_VENV))/bin:$$PATH" \
	$(SAM) build --build-dir .aws-sam/build
HAS_LAMBDA_PYTHON = test -x $(SAM_VENV)/bin/python$(LAMBDA_PYTHON)

.PHONY: setup run up test unit integration lint format schemas bench build deploy deploy-guided emulator clean

setup: $(VENV)/.installed $(SAM_VENV)/.installed

# A venv made with another Python than the one chosen now (a 3.11 one, on a machine that has
# since got a 3.12) is made again, with its SAM venv.
ifneq ($(VENV_VERSION),$(PYTHON_VERSION))
.PHONY: $(VENV)/.installed $(SAM_VENV)/.installed
endif

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON_VERSION)" || { echo "make setup: $(PYTHON) does not run; give PYTHON=<a Python 3.12>" >&2; exit 1; }
	@if [ "$(PYTHON_VERSION)" = "$(LAMBDA_PYTHON)" ]; then \
		echo "make setup: using Python $(PYTHON_VERSION), $(PYTHON)"; \
	else \
		echo "make setup: WARNING: using $(PYTHON), Python $(PYTHON_VERSION), not Lambda's $(LAMBDA_PYTHON) ($(PYTHON_FROM)): make test skips sam build" >&2; \
	fi
	@if [ -d $(VENV) ] && [ "$(VENV_VERSION)" != "$(PYTHON_VERSION)" ]; then \
		echo "make setup: $(VENV) has Python $(or $(VENV_VERSION),unknown), so it is made again"; rm -rf $(VENV); fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[local,dev]'
	echo $(PYTHON_VERSION) > $@

$(SAM_VENV)/.installed: .ci/sam-requirements.txt | $(VENV)/.installed
	rm -rf $(SAM_VENV)
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/python -m pip install --quiet -r .ci/sam-requirements.txt
	touch $@

## The main job on the bundled samples, fully offline (local stack + emulator).
## samples/damaged/ holds a truncated file on purpose: it must end as document.failed, and the
## run then exits 1, which is the expected outcome here; any other failure still stops make.
run: setup
	$(BIN)/ocr-pipeline run samples --out $(OUT) || [ $$? -eq 1 ]

## The local stack in the foreground, for developing against it with any AWS SDK (Ctrl-C stops it).
up: setup
	$(BIN)/ocr-pipeline up

## Every test, plus the template linters and `sam build` (tests/integration/test_sam_build.py checks
## what it built); without a Python 3.12 the build is skipped, with a warning.
test: setup
	$(BIN)/cfn-lint template.yaml
	$(SAM) validate --lint
	@if $(HAS_LAMBDA_PYTHON); then echo "sam build --build-dir .aws-sam/build, with $(SAM_VENV)/bin/python$(LAMBDA_PYTHON)"; $(SAM_BUILD); else \
		echo "make test: WARNING: sam build skipped: the venv has Python $(PYTHON_VERSION), not $(LAMBDA_PYTHON) (see make setup)" >&2; fi
	$(BIN)/python -m pytest

## The fast tests (no network), and the slow ones that drive the local stack (marked integration).
unit: setup
	$(BIN)/python -m pytest -m "not integration" tests

integration: setup
	$(BIN)/python -m pytest -m integration tests

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy layers/ocr_pipeline/ocr_pipeline devkit/ocr_devkit

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## The published JSON schema of OCR requests, regenerated from the model (a test checks they agree).
schemas: setup
	$(BIN)/python -m ocr_pipeline.pipeline.request_intake

## The layer's lock, layers/ocr_pipeline/requirements.txt, regenerated from pyproject.toml's runtime pins
## (every package pinned and hashed for the Lambda platform; needs PyPI): run it after changing a pin.
.PHONY: lock
lock: setup
	$(BIN)/python .ci/lock-layer

## Benchmarks (not part of `make test`): writes benchmarks/report.json and BENCHMARKS.md.
## poppler-utils is the pdf2image baseline's renderer; without it that baseline is reported unavailable.
bench: setup
	$(BIN)/python -m pip install --quiet -e '.[bench]' \
		|| echo "make bench: the bench extra could not be installed; the pdf2image baseline will be unavailable" >&2
	command -v pdftoppm >/dev/null || { apt-get update -qq && apt-get install -y -qq poppler-utils; } >/dev/null 2>&1 \
		|| echo "make bench: poppler-utils could not be installed; the pdf2image baseline will be unavailable" >&2
	$(BIN)/python -m benchmarks.run

## The offline DashScope emulator in the foreground.
emulator: setup
	$(BIN)/python -m ocr_devkit.emulator

## The deployable build in .aws-sam/build: needs a Python 3.12 (or `$(SAM_VENV)/bin/sam build --use-container`).
build: setup
	@$(HAS_LAMBDA_PYTHON) || { echo "make build: the venv has Python $(PYTHON_VERSION), but the layer is compiled by Python $(LAMBDA_PYTHON): install one and run make setup" >&2; exit 1; }
	$(SAM_BUILD)

## Deploys with samconfig.toml once it names the API key's secret; until then, guided (which records the answers).
deploy: build
	@if grep -q '^parameter_overrides' samconfig.toml 2>/dev/null; then $(SAM) deploy; else $(SAM) deploy --guided; fi

## The first deploy: asks for each parameter and records the answers in samconfig.toml.
deploy-guided: build
	$(SAM) deploy --guided

clean:
	rm -rf $(VENV) $(OUT) .aws-sam .pytest_cache .mypy_cache .ruff_cache
