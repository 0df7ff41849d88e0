# Two commands on a fresh machine: `make demo` runs the engine on the bundled sample catalogue,
# `make test` runs the tests. Both create .venv and install what they need first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo serve test lint bench install chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# the CPU build of torch first: a looser pin would pull a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

# `lookalike` lives in .venv/bin, not on the PATH: say so after each target that installs it.
HINT = @echo; echo "lookalike is installed in .venv (not on your PATH): run .venv/bin/lookalike --help," \
	"or first: source .venv/bin/activate"

install: $(STAMP)
	$(HINT)

demo: $(STAMP)
	$(BIN)/lookalike demo
	$(HINT)
	@echo "the web page on the sample catalogue: make serve"

# the demo's index kept in demo.index, served at http://127.0.0.1:8000 (PORT=8080 to change it)
PORT ?= 8000
serve: $(STAMP)
	$(BIN)/lookalike demo --index demo.index --serve --port $(PORT)

test: $(STAMP) chromium
	$(BIN)/ruff check src tests benchmarks
	# two workers, one test file each at a time (module fixtures are built once): CI machines have 2 cores
	$(BIN)/python -m pytest -q -rs -n 2 --dist loadfile

# tests/test_browser.py opens the web page in a real browser: Debian's Chromium (about 350 MB with
# its libraries), never one Playwright would download. Installed through apt-get when missing and we
# are root (CI: a failed install fails the run), with a line saying so; otherwise, or with
# BROWSER=skip, the browser test is skipped and says why.
BROWSER ?= install
chromium:
	@if [ ! -x /usr/bin/chromium ] && ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$(BROWSER)" != skip ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Chromium (apt-get install chromium, ~350 MB) for the browser test of the web page;" \
	      "(make test BROWSER=skip installs nothing)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "note: no Chromium (apt-get install chromium): the browser test of the web page will be skipped"; \
	  fi; \
	fi

bench: $(STAMP)
	$(BIN)/python benchmarks/retrieval.py
