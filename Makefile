# Two commands a user needs: `make reproduce` and `make test`. Everything else is a helper target.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN ?= runs/demo
PARAMS ?= params/demo.yaml

# torch: on CPU-only Linux take the CPU wheel pinned below (never a multi-GB CUDA build);
# with an NVIDIA driver (nvidia-smi present) or on macOS take pip's default build (CUDA / MPS).
# Override with `make TORCH_SPEC='torch==X' TORCH_PIP_ARGS='--index-url ...'`.
HAS_NVIDIA := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo 1)
UNAME_S := $(shell uname -s)
ifeq ($(UNAME_S)$(HAS_NVIDIA),Linux)
TORCH_SPEC ?= torch==2.13.0
else
TORCH_SPEC ?= torch>=2.4
endif
TORCH_PIP_ARGS ?=

.PHONY: help install test reproduce figures lint bench clean-venv

help:
	@echo "make reproduce   run the whole study on the embedded synthetic cohort -> $(RUN)"
	@echo "make test        run the test suite"
	@echo "make figures     regenerate figures/ from the latest run's saved results (or RUN=runs/NAME)"
	@echo "make bench       run the benchmarks in benchmarks/ (after make reproduce)"

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	@touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q

reproduce: $(VENV)/.installed
	$(VENV)/bin/amt run --params $(PARAMS) --out $(RUN)

# the run under runs/*/ evaluated last, or the one named with `make figures RUN=PATH` (or RUN in the environment)
figures: $(VENV)/.installed
	$(VENV)/bin/amt figures --run $(if $(filter command line environment,$(origin RUN)),$(RUN),latest) --out figures

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check amt_core tests benchmarks

# benchmarks are scripts, not timed tests; the model benchmark needs a finished `make reproduce`
bench: $(VENV)/.installed
	$(PY) benchmarks/bench_cohort.py --cohort
	$(PY) benchmarks/bench_evaluation.py
	$(PY) benchmarks/bench_model.py --model $(RUN)/train/best.pt --cohort $(RUN)/cohort/cases.csv

clean-venv:
	rm -rf $(VENV)
