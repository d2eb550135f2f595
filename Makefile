# The README's two commands: `make run` (zoo serve on the bundled demo weights) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint install lock clean

# pyproject.toml states compatible ranges; constraints.txt pins the exact versions tested.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,docs,lint]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/zoo serve

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

# ruff (lint rules, import order) on the whole tree, mypy on zoo/ serving/ export/ training/ (pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# After changing a range in pyproject.toml: pip install the new version into .venv, run the tests,
# then pin what .venv now has.
lock:
	$(BIN)/python .ci/lock.py > constraints.txt

clean:
	rm -rf $(VENV) runs .pytest_cache
