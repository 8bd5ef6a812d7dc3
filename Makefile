# Two commands for a fresh machine with python3 and make: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test test-scale-out lint demo up bench lock diagram clean browser

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

test: $(STAMP) lint browser
	$(BIN)/python -m pytest -q

# Browser tests drive Debian's Chromium through Playwright (never a downloaded browser build).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  elif command -v sudo >/dev/null 2>&1; then sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing: apt-get install chromium (as root)" >&2; exit 2; fi; }
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
