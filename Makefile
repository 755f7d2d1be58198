# Two entry points for a fresh clone: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench reproduce-cifar10 reproduce-ablation
PRESET ?= quick

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# A small render from the embedded default photograph, then a contact sheet of it.
demo: $(STAMP)
	$(BIN)/pipeline render --n-src 1 --n-patches 2000 --size 64 --out shards/demo
	$(BIN)/pipeline preview shards/demo --out shards/demo/preview.png
	@echo "shards:  $(CURDIR)/shards/demo"
	@echo "preview: $(CURDIR)/shards/demo/preview.png"

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/render.py

# The paper's CIFAR-10 results end to end (Table 3 rows; Table 1 ablation), resumable: re-run to continue.
# PRESET=quick (CPU: about 2 h for cifar10 on 2 cores, 6 h for the ablation) or PRESET=full (one GPU);
# see experiments/reproduce.py.
reproduce-cifar10: $(STAMP)
	$(BIN)/python experiments/reproduce.py cifar10 --preset $(PRESET)

reproduce-ablation: $(STAMP)
	$(BIN)/python experiments/reproduce.py ablation --preset $(PRESET)
