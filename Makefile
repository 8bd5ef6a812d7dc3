# Two commands for a fresh machine with python3 and make: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test test-scale-out lint demo up bench lock diagram clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

# Only the two-worker scale-out test (also part of `make test`); prints its timings as one JSON line.
test-scale-out: $(STAMP)
	$(BIN)/python -m pytest -q -s -m scale_out tests/flows/test_scale_out.py

# ruff over the whole tree, mypy over the pure core (states/); both run before the tests.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m mypy

demo: $(STAMP)
	$(BIN)/python -m cli.demo

up: $(STAMP)
	$(BIN)/python -m cli.up

bench: $(STAMP)
	$(BIN)/vozvrat bench transitions --claims 60000 --json

diagram: $(STAMP)
	$(BIN)/vozvrat diagram --out docs/lifecycle.md

# Re-resolve the pinned set after changing pyproject.toml dependencies.
lock:
	rm -rf /tmp/vozvrat-lock && $(PYTHON) -m venv /tmp/vozvrat-lock
	/tmp/vozvrat-lock/bin/pip install -q -U pip && /tmp/vozvrat-lock/bin/pip install -q '.[test]'
	/tmp/vozvrat-lock/bin/pip freeze --exclude-editable | grep -v '^vozvrat' > requirements.lock

clean:
	rm -rf $(VENV) var .pytest_cache
