# Airlock — the two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
# Laptop defaults; production sets DEBUG=0 and the variables the README lists.
export DEBUG ?= 1
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint format migrate seed clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(BIN)/python manage.py migrate --noinput

seed: migrate
	$(BIN)/python manage.py seed_demo

## Embedded default: SQLite + Celery over kombu's filesystem transport; nothing to install.
run: seed
	$(BIN)/python manage.py runconsole

# Tests run in parallel (pytest-xdist): each worker has its own test database, Redis databases
# and static folder (tests/parallel.py). Most of a test's time is spent waiting on a browser, a
# server or a worker process, so more workers than cores still helps; at most 5 fit Redis.
# The fault run and the soak (marked slow) are scheduled first, so their minutes overlap the
# rest; the soak judges the server by its own work per request and its memory, which the other
# tests' load does not blur (tests/faults/test_soak.py).
TEST_WORKERS ?= 4
test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) var db.sqlite3 .pytest_cache .import_linter_cache
