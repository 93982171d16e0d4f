# Two commands on a fresh machine with Python 3.10+:
#   make demo   runs the main job on the embedded default (hub emulator + simulated cluster)
#   make test   runs the whole test suite
# Both create .venv on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RAY_ENV := RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0

.PHONY: demo test lint clean

$(BIN)/raydf: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(BIN)/raydf

demo: $(BIN)/raydf
	$(RAY_ENV) $(BIN)/raydf demo

test: $(BIN)/raydf
	$(RAY_ENV) $(BIN)/python -m pytest -q

lint: $(BIN)/raydf
	$(BIN)/ruff check raydf tests benchmarks
	$(BIN)/mypy raydf benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
