# The README's two commands: `make run` (zoo serve on the bundled demo weights) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Installed without their dependencies: their metadata pins a GUI opencv-python (rapidocr: it would
# fight our opencv-python-headless, the same cv2) or torch < 2.3 (facenet-pytorch, which runs on ours);
# what they import at run time is in pyproject's base dependencies (tests/core/test_packaging.py checks).
NO_DEPS := rapidocr-onnxruntime facenet-pytorch

.PHONY: run test lint install lock clean

# pyproject.toml states compatible ranges; constraints.txt pins the exact versions tested.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,docs,lint]"
	$(BIN)/python -m pip install --quiet -c constraints.txt --no-deps $(NO_DEPS)
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/zoo serve

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

# ruff (lint rules, import order) on the whole tree, mypy on zoo/ (serving/ export/ training/ inside it as zoo.*; pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# After changing a range in pyproject.toml: pip install the new version into .venv, run the tests,
# then pin what .venv now has.
lock:
	$(BIN)/python .ci/lock.py > constraints.txt

clean:
	rm -rf $(VENV) runs .pytest_cache
