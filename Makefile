# Two entry points for a fresh clone: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint docs bench reproduce-cifar10 reproduce-ablation reproduce-cifar100 reproduce-continuum reproduce-distill
PRESET ?= quick

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The paper's finding on this machine in minutes: one image -> RotNet -> conv1 and conv2 probed on CIFAR-10 against
# their random initialisation -> one picture, runs/demo/seed-$(SEED)/demo.png (see experiments/demo.py).
# Completed stages are reused, so a second run takes seconds and an interrupted one continues. SEED=N runs
# another seed in its own folder; DEMO_DATA=KIND:PATH points at CIFAR-10 where ../shared/data/cifar10-jpg is absent
# (otherwise it is downloaded into the user cache); DEMO_ARGS passes more options (experiments/demo.py --help).
SEED ?= 0
DEMO_ARGS ?=
demo: $(STAMP)
	$(BIN)/python experiments/demo.py --seed $(SEED) $(DEMO_ARGS)

# every core (pytest-xdist, pyproject.toml's addopts); the 15 slowest tests are listed at the end
test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15

lint: $(STAMP)
	$(BIN)/ruff check .

# the documentation site (mkdocs.yml, docs/) into site/; --strict: a broken link, anchor or API reference fails it
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(BIN)/python bench/render.py

# The paper's CIFAR-10 results end to end (Table 3 rows; Table 1 ablation), resumable: re-run to continue.
# PRESET=quick (CPU: about 2.5 h for cifar10's single-image rows and baselines on 2 cores, an estimated 1.5 h more
# for its two real-data rows, which take the same steps; 6 h for the ablation) or PRESET=full (one GPU);
# see experiments/reproduce.py. reproduce-cifar100 needs CIFAR100=PATH (cifar-100-python/ or its parent folder).
reproduce-cifar10: $(STAMP)
	$(BIN)/python experiments/reproduce.py cifar10 --preset $(PRESET)

reproduce-ablation: $(STAMP)
	$(BIN)/python experiments/reproduce.py ablation --preset $(PRESET)

reproduce-cifar100: $(STAMP)
	$(BIN)/python experiments/reproduce.py cifar100 --preset $(PRESET) $(if $(CIFAR100),--data cifar100:$(CIFAR100))

# What one image can teach a classifier (issue 34): a CIFAR teacher trained with labels, students distilled from Image
# B, Image A, 10 ImageNet photos, the training images and uniform noise, and one trained with labels, all scored by
# `probe classify` (experiments/targets/distill.py). PRESET=quick (CPU: about 2.4 h estimated on 2 cores) or
# PRESET=full (one GPU); CIFAR100=PATH runs it on CIFAR-100 instead of the shared CIFAR-10 copy.
reproduce-distill: $(STAMP)
	$(BIN)/python experiments/reproduce.py distill --preset $(PRESET) $(if $(CIFAR100),--data cifar100:$(CIFAR100))

# The paper's Table 2 continuum at CIFAR scale (N = 1, 10, 1,000 and the full set; experiments/targets/continuum.py),
# sharing cifar10's stages in runs/reproduce-cifar10. PRESET=quick (CPU: RotNet and DeepCluster, an estimated 5.7 h
# for its stages beyond cifar10's) or PRESET=full (one GPU). The sources are found beside --src (Image B):
# ../shared/data's paper-images/ and imagenet-sample-1000.tar.
reproduce-continuum: $(STAMP)
	$(BIN)/python experiments/reproduce.py continuum --preset $(PRESET)
