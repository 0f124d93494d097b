# One entry point for people and CI. `make demo` and `make test` each build .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
PYTEST_ARGS ?=

.PHONY: demo test lint test-deps venv venv-dev clean

demo: $(VENV)/.installed
	$(VENV)/bin/tether demo

test: $(VENV)/.installed-dev test-deps lint
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test-deps:
	@scripts/ensure-test-deps.sh

venv: $(VENV)/.installed
venv-dev: $(VENV)/.installed-dev

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "tether needs Python >= 3.10; set PYTHON=python3.11 (or newer) and run make again")'
	$(PYTHON) -m venv $(VENV)

# constraints.txt pins torch to the CPU build on this machine; the package itself takes a range.
$(VENV)/.installed: $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP) install -q -c constraints.txt -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	@touch $@

clean:
	rm -rf $(VENV) build *.egg-info
