# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-all bench clean chromium

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "replaylab needs Python >= 3.11 (set PYTHON=...)"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[dev]"
	@touch $@

# The demo: SAC with uniform replay against NMER, IQM table and learning curves.
run: $(STAMP)
	$(BIN)/replaylab compare --config configs/demo.yaml

# Headless Chromium for tests/test_report.py, from the distribution's packages where it is
# missing; best effort: without apt-get and root (or password-less sudo) that test skips.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ SUDO=$$([ "$$(id -u)" = 0 ] || echo "sudo -n"); command -v apt-get >/dev/null 2>&1 && \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
	echo "chromium could not be installed (needs apt-get as root); tests/test_report.py will skip its browser check"

# The test suite (< 15 minutes on 2 cores), one pytest-xdist worker per core (at most 4:
# each worker is a JAX process with its own compiled functions); tests of one xdist_group
# (the Ray ones, which share /tmp/ray) run on one worker.
XDIST := -n auto --maxprocesses 4 --dist loadgroup

test: $(STAMP) chromium
	$(BIN)/pytest -q $(XDIST)

# Everything, slow tests included.
test-all: $(STAMP) chromium
	$(BIN)/pytest -q $(XDIST) -m "slow or not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
