# The two commands a newcomer needs: `make run` and `make test`. Everything installs into .venv on demand.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export SCIMJIT_DATABASE_URL ?= sqlite:///./scimjit.db

.PHONY: run test lint fmt bench install clean

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/scimjit db upgrade
	$(BIN)/scimjit serve --host 127.0.0.1 --port 8000

lint: $(STAMP)
	$(BIN)/ruff check scimjit tests bench
	$(BIN)/ruff format --check scimjit tests bench
	$(BIN)/mypy scimjit

fmt: $(STAMP)
	$(BIN)/ruff check --fix scimjit tests bench
	$(BIN)/ruff format scimjit tests bench

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# New Alembic revision from the difference between scimjit/store/tables.py and the migrations: make migration MSG="..."
migration: $(STAMP)
	$(BIN)/python -c "import sys; from scimjit.store.migrate import autogenerate; autogenerate(sys.argv[1])" "$(MSG)"
