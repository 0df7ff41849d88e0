# Two commands on a fresh machine: `make demo` runs the engine on the bundled sample catalogue,
# `make test` runs the tests. Both create .venv and install what they need first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench install chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# the CPU build of torch first: a looser pin would pull a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/lookalike demo

test: $(STAMP) chromium
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -rs

# tests/test_browser.py drives Debian's Chromium (never a downloaded one): installed here when
# missing and we are root (CI: a failed install fails the run); otherwise that test is skipped and says why.
chromium:
	@if [ ! -x /usr/bin/chromium ] && ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "note: no Chromium (apt-get install chromium): the browser test will be skipped"; \
	  fi; \
	fi

bench: $(STAMP)
	$(BIN)/python benchmarks/retrieval.py
