# Two commands do all set-up on a fresh machine:
#   make book   build the site with every notebook executed once  -> _build/html/index.html
#   make test   lint + every unit test + every notebook through nbmake + a book build, warnings = errors
# Each creates .venv and installs what it needs there.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
# Empty: pip's configured index (PyPI). make book TORCH_INDEX=https://download.pytorch.org/whl/cpu
# installs the CPU-only build on a Linux machine without a GPU.
TORCH_INDEX ?=
# nbmake's limit per cell: a guard against a hung cell, not the 3-minute budget per notebook.
# (180 s stopped a 2-thread training cell that ran 160-200 s while the machine was shared.)
NB_TIMEOUT ?= 300
# Notebooks executed at a time, each kernel with its share of the cores' threads. One: on a quiet
# 2-core machine chapters 08 + 13 took 165 s side by side against 175 s in turn, while 13's own
# time went from 106 s to 165 s, so two at a time saves little and slows each chapter's cells.
# make notebooks NB_JOBS=2 tries it.
NB_JOBS ?= 1
BUILD := _build
# The executed copy of the book's sources: the notebooks in git stay free of outputs.
# (Not under _build: nbmake skips any path with _build in it.)
SRC := executed
JB_FLAGS ?=

.PHONY: install book test lint unit unit-all notebooks site clean gpu-check

install: $(VENV)/.installed

# torch first, pinned: the package's own requirement is a range (so Colab's torch stays) and a
# loose resolve on a machine without torch could pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e ".[dev,book]"
	touch $@

# Execute the notebooks in a copy, keeping the outputs for the site. A notebook runs again only
# when it or the package changed since its last successful run (make clean forces all of them);
# each chapter is printed as it starts and ends, with its time and the running total.
notebooks: install
	$(PY) scripts/execute_notebooks.py --out $(SRC) --timeout $(NB_TIMEOUT) $(if $(NB_JOBS),--jobs $(NB_JOBS))

# Build from the executed copy; _config.yml sets execute_notebooks: off.
site:
	$(VENV)/bin/jupyter-book build $(SRC) --path-output . $(JB_FLAGS)
	@echo "site: $(BUILD)/html/index.html"

book: notebooks
	$(MAKE) site

lint: install
	$(VENV)/bin/ruff check genai_course tests notebooks scripts
	$(PY) scripts/check_typed_figures.py

# The fast lane, for while you edit: every test but those marked slow (the 13 recipe trainings,
# torchrun, torch.compile), under 2 minutes on 2 cores.
unit: install
	$(PY) -m pytest tests -q -m "not slow" --durations=15

# Every test, the slow ones included: what make test (and so CI) runs.
unit-all: install
	$(PY) -m pytest tests -q --durations=15

# On a machine with CUDA: the GPU path checked in one run of at most 8 minutes (bf16/fp16
# autocast, compile, fused AdamW, data on the device, MFU, two recipes trained with the full
# profile, chapter 09 executed with it), its figures in gpu-check.json. It refuses without CUDA
# (python -m genai_course.bench.gpu_check --tiny --device cpu runs its code at tiny sizes). No
# install step: a GPU machine brings its CUDA build of torch (make gpu-check PY=python3).
gpu-check:
	$(PY) -m genai_course.bench.gpu_check --out gpu-check.json

test: lint unit-all notebooks
	$(MAKE) site JB_FLAGS="-W --keep-going"

clean:
	rm -rf $(BUILD) $(SRC)
