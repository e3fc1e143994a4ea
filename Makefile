# Two commands a user needs: `make reproduce` and `make test`. Everything else is a helper target.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN ?= runs/demo
PARAMS ?= params/demo.yaml

# torch: one release (TORCH_LOCK, the one the lock was compiled against). On CPU-only Linux the CPU build
# (this machine's wheel folder holds it; elsewhere PyTorch's CPU index), never a multi-GB CUDA build; with an
# NVIDIA driver (nvidia-smi present) PyPI's CUDA build of the same release; on macOS pip's default (MPS).
# Override with `make TORCH_SPEC='torch==X' TORCH_PIP_ARGS='--index-url ...'`.
TORCH_LOCK := 2.13.0
HAS_NVIDIA := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo 1)
UNAME_S := $(shell uname -s)
ifeq ($(UNAME_S),Linux)
TORCH_SPEC ?= torch==2.13.0
ifneq ($(HAS_NVIDIA),1)
TORCH_PIP_ARGS ?= $(if $(wildcard /opt/wheels/torch-$(TORCH_LOCK)+cpu-*.whl),,--index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple)
endif
else
TORCH_SPEC ?= torch==$(TORCH_LOCK)
endif
TORCH_PIP_ARGS ?=

# Everything but torch comes from the lock (exact versions, SHA-256 hashes): amt_core/lock/, written by
# `make lock`. It is compiled for Linux x86_64 and Python 3.11; elsewhere (or with LOCK=none) pip resolves
# pyproject.toml's ranges instead, and provenance.json records that the run did not match the lock.
PYVER := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
ifeq ($(UNAME_S)$(PYVER),Linux3.11)
LOCK ?= amt_core/lock/linux-cpu-py311.txt
else
LOCK ?= none
endif
# the lock is installed by uv (same versions and hashes as pip would check; about 45 s instead of pip's 110 s
# on a 2-core machine, a minute of `make reproduce` from a fresh clone)
UV_VERSION ?= 0.13.9
# where `make lock` finds the CPU torch wheel it compiles against (this machine's wheel folder, else the
# PyTorch CPU index)
LOCK_TORCH_SOURCE ?= $(if $(wildcard /opt/wheels/torch-*+cpu-*.whl),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)

.PHONY: help install test test-browser quick reproduce figures lab lint bench lock clean-venv

help:
	@echo "make quick       a first look in minutes: every notebook, figure and the report on a small cohort -> runs/quick"
	@echo "make reproduce   run the whole study on the embedded synthetic cohort -> $(RUN)"
	@echo "make test        run the test suite (make test-browser: the JupyterLab explorer in headless Chromium)"
	@echo "make lab         JupyterLab at a run folder (RUN=runs/NAME, default the latest run)"
	@echo "make figures     regenerate figures/ from the latest run's saved results (or RUN=runs/NAME)"
	@echo "make bench       run the benchmarks in benchmarks/ (after make reproduce)"

$(VENV)/.installed: pyproject.toml $(filter-out none,$(LOCK))
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
ifeq ($(LOCK),none)
	$(PY) -m pip install -q -e ".[test]"
else
	$(PY) -m pip install -q "uv==$(UV_VERSION)"
	$(VENV)/bin/uv pip install -q --require-hashes --no-deps -r $(LOCK) --python $(PY)
	$(VENV)/bin/uv pip install -q --python $(PY) --no-deps -e .
	$(PY) -c 'from amt_core.lock import lock_status; s = lock_status(); assert s["matches"], s["mismatches"]'
endif
	@touch $@

install: $(VENV)/.installed

# two workers, one test file each at a time (a file's module fixtures, e.g. the smoke run, are built once)
test: $(VENV)/.installed
	AMT_LOCK=$(LOCK) $(PY) -m pytest -q -n 2 --dist loadfile -m "not browser"

# the explorer in JupyterLab, driven in headless Chromium (Debian's chromium + chromium-driver; .ci/run installs them)
test-browser: $(VENV)/.installed
	AMT_LOCK=$(LOCK) AMT_BROWSER_SHOTS=$(CURDIR)/tests/artifacts/browser $(PY) -m pytest -q -m browser

# a preview of the whole study in minutes (params/quick.yaml; its report says it is not the study's design)
quick: $(VENV)/.installed
	$(VENV)/bin/amt run --params quick --out runs/quick

reproduce: $(VENV)/.installed
	$(VENV)/bin/amt run --params $(PARAMS) --out $(RUN)

# the run under runs/*/ evaluated last, or the one named with `make figures RUN=PATH` (or RUN in the environment);
# figures/ is replaced whole each time (figures/figures.json names the run; figures/README.md is kept)
figures: $(VENV)/.installed
	$(VENV)/bin/amt figures --run $(if $(filter command line environment,$(origin RUN)),$(RUN),latest) --out figures

lab: $(VENV)/.installed
	$(VENV)/bin/amt lab $(if $(filter command line environment,$(origin RUN)),$(RUN),)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check amt_core tests benchmarks notebooks
	$(VENV)/bin/ruff format --check amt_core tests benchmarks
	$(VENV)/bin/mypy amt_core

# benchmarks are scripts, not timed tests; the model benchmark needs a finished `make reproduce`
bench: $(VENV)/.installed
	$(PY) benchmarks/bench_cohort.py --cohort
	$(PY) benchmarks/bench_evaluation.py
	$(PY) benchmarks/bench_model.py --model $(RUN)/train/best.pt --cohort $(RUN)/cohort/cases.csv
	$(PY) benchmarks/bench_real_ct.py --run $(RUN) --results benchmarks/RESULTS.md --insertions 5 --context

# re-solve the lock from pyproject.toml (newest versions within its ranges) and rewrite environment.yml
lock: $(VENV)/.installed
	$(PY) -m pip install -q "uv==$(UV_VERSION)"
	printf 'torch==$(TORCH_LOCK)+cpu\n' > $(VENV)/torch-override.txt
	$(VENV)/bin/uv pip compile pyproject.toml --extra test --extra nnunet --generate-hashes --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 $(LOCK_TORCH_SOURCE) --override $(VENV)/torch-override.txt \
		--no-emit-package torch --no-emit-package torchvision --custom-compile-command "make lock" -q \
		-o amt_core/lock/linux-cpu-py311.txt
	$(PY) -c 'from pathlib import Path; from amt_core.lock import environment_yml, read_lock; \
		Path("environment.yml").write_text(environment_yml(read_lock()))'

clean-venv:
	rm -rf $(VENV)
