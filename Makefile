# Two entry points: `make demo` and `make test`. Both create .venv on demand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: demo test lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[demo]'
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[test,demo]'
	touch $@

demo: $(VENV)/.demo-installed
	./scripts/demo

test: $(VENV)/.test-installed
	./scripts/ensure-services
	$(BIN)/python -m pytest -n 2 -p no:cacheprovider
	$(BIN)/python -m mypy

typecheck: $(VENV)/.test-installed
	$(BIN)/python -m mypy

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .sessionlint_cache build *.egg-info
