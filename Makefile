# Everything a fresh machine needs: `make dev` runs the agent, `make test` tests it.
# uv lives in its own venv (.uv/) and installs the locked dependencies into .venv/.

SHELL := /bin/bash
PYTHON ?= python3.11
UV_VERSION := 0.13.9
UV := .uv/bin/uv
VENV := .venv
BIN := $(VENV)/bin
export UV_PYTHON_DOWNLOADS := never

.PHONY: install dev serve test bench lint typecheck format diagram clean

install: $(VENV)/.installed

$(UV):
	$(PYTHON) -m venv .uv
	.uv/bin/python -m pip install --quiet --upgrade pip
	.uv/bin/python -m pip install --quiet uv==$(UV_VERSION)

$(VENV)/.installed: uv.lock pyproject.toml | $(UV)
	$(UV) sync --locked --python $(PYTHON)
	touch $@

## Run the agent under `langgraph dev` (Studio). No OPENAI_API_KEY? It uses the bundled local model.
dev: install
	scripts/dev.sh $(ARGS)

## Run the self-hosted server against DATABASE_URL.
serve: install
	$(BIN)/python -m agent serve $(ARGS)

## Lint, type-check and run every test (the same command CI runs).
test: install lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

## Benchmarks (not tests): writes bench/results/latest.{json,md,png}. ARGS="--quick" for ~5 min.
bench: install
	$(BIN)/python -m bench $(ARGS)

lint: install
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts

typecheck: install
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix src tests bench scripts
	$(BIN)/ruff format src tests bench scripts

## Regenerate the README's graph diagram from the graph itself.
diagram: install
	$(BIN)/python scripts/diagram.py --write

clean:
	rm -rf .uv $(VENV) .mypy_cache .ruff_cache .pytest_cache
