# Two entry points: `make demo` and `make test`. Both create .venv on demand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: demo test test-matrix lint typecheck bench clean

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

# The runtime guard on each SQLAlchemy line it supports: the latest 1.4.x and 2.0.x,
# one venv each (the default, 2.1, is `make test`'s). Only the guard's tests: the
# static linter does not depend on the SQLAlchemy version.
GUARD_DEPS := pytest pytest-xdist pymysql aiosqlite aiomysql greenlet
PG_DRIVERS_1.4 := psycopg2-binary asyncpg
PG_DRIVERS_2.0 := "psycopg[binary]"

.venv-sa%/.installed: pyproject.toml
	$(PYTHON) -m venv .venv-sa$*
	.venv-sa$*/bin/python -m pip install --quiet --disable-pip-version-check -e . "sqlalchemy==$*.*" $(GUARD_DEPS) $(PG_DRIVERS_$*)
	touch $@

test-matrix: .venv-sa1.4/.installed .venv-sa2.0/.installed
	./scripts/ensure-services
	for v in 1.4 2.0; do \
	  .venv-sa$$v/bin/python -c "import sqlalchemy; print('== runtime guard on SQLAlchemy', sqlalchemy.__version__)" && \
	  .venv-sa$$v/bin/python -m pytest -q -n 2 -p no:cacheprovider tests/guard || exit 1; \
	done

typecheck: $(VENV)/.test-installed
	$(BIN)/python -m mypy

clean:
	rm -rf $(VENV) .venv-sa1.4 .venv-sa2.0 .mypy_cache .pytest_cache .sessionlint_cache build *.egg-info
