# The table of contents of the project. `make run` and `make test` work on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out

.PHONY: setup run up test unit integration lint format schemas bench build deploy emulator clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[local,dev]'
	touch $@

## The main job on the bundled samples, fully offline (local stack + emulator).
## samples/damaged/ holds a truncated file on purpose: it must end as document.failed, and the
## run then exits 1, which is the expected outcome here; any other failure still stops make.
run: setup
	$(BIN)/ocr-pipeline run samples --out $(OUT) || [ $$? -eq 1 ]

## The local stack in the foreground, for developing against it with any AWS SDK (Ctrl-C stops it).
up: setup
	$(BIN)/ocr-pipeline up

## Every test, plus the template linter.
test: setup
	$(BIN)/cfn-lint template.yaml
	$(BIN)/python -m pytest

unit: setup
	$(BIN)/python -m pytest tests/unit

integration: setup
	$(BIN)/python -m pytest tests/integration

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy layers/ocr_pipeline/ocr_pipeline devkit/ocr_devkit

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## The published JSON schema of OCR requests, regenerated from the model (a test checks they agree).
schemas: setup
	$(BIN)/python -m ocr_pipeline.pipeline.requests

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

build:
	sam build

deploy: build
	sam deploy --guided

clean:
	rm -rf $(VENV) $(OUT) .aws-sam .pytest_cache .mypy_cache .ruff_cache
