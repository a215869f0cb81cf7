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
	@echo "== sessionlint check examples/flask_shop (static findings) =="
	-$(BIN)/sessionlint check examples/flask_shop
	@echo
	@echo "== the example app's tests under the runtime guard (SQLite) =="
	-cd examples/flask_shop && ../../$(BIN)/python -m pytest -q -p no:cacheprovider --sessionguard
	@echo
	@echo "Both steps above are expected to report findings: the example app is full of real misuse."

test: $(VENV)/.test-installed
	./scripts/ensure-services
	$(BIN)/python -m pytest -n 2 -p no:cacheprovider
	$(BIN)/python -m mypy

typecheck: $(VENV)/.test-installed
	$(BIN)/python -m mypy

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .sessionlint_cache build *.egg-info
