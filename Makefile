# The two commands a newcomer needs:  make serve   and   make test
# (make test-fast: the quick tier while you work, everything not marked slow)
# Each creates .venv on first use and installs what it needs.

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
# Serving processes: one per core to serve on (docs/service.md, "Serving processes").
WORKERS ?= 2
# pytest processes for make test / test-fast (pytest-xdist; each takes whole test files, so a
# file's module fixtures are built once). 1: one process, no xdist.
TEST_JOBS ?= 2
# Empty: the bundled checkpoints (service/settings.py, BUNDLED_CHECKPOINTS); or one folder.
CHECKPOINT ?=
# The torch build: the CPU build by default. Its local version label (+cpu) makes pip refuse
# any other build rather than pull the multi-GB CUDA one that plain torch==2.13.0 is on the
# default index. The one switch for CUDA: TORCH_REQUIREMENT=torch==2.13.0 (as the Dockerfile's
# build argument of the same name).
TORCH_REQUIREMENT ?= torch==2.13.0+cpu
# The wheel index that carries TORCH_REQUIREMENT, added as an extra index: PyTorch's CPU wheel
# index on a stock machine. Empty: pip's own configuration (enough where pip already finds the
# CPU wheel, in a local wheel folder or a mirror). Set it here or in the environment.
TORCH_INDEX ?=
# Any other pip options for the torch line only.
TORCH_PIP_ARGS ?=

.PHONY: venv serve test test-fast lint train-mnist train-cifar10 train-cifar10-sweep bench-train

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, the pinned build, so nothing later pulls another (a multi-GB CUDA one).
	$(PY) -m pip install --quiet $(if $(TORCH_INDEX),--extra-index-url '$(TORCH_INDEX)') \
	  $(TORCH_PIP_ARGS) '$(TORCH_REQUIREMENT)' || { \
	  echo "make: could not install $(TORCH_REQUIREMENT). The CPU build is on PyTorch's CPU" \
	    "wheel index, not the default one: make venv TORCH_INDEX=<that index's URL>;" \
	    "for the CUDA build, TORCH_REQUIREMENT=torch==2.13.0 (README, 'Two commands')." >&2; \
	  exit 1; }
	# cleverhans 4.0.0's metadata drags in TensorFlow packages its PyTorch attacks never import.
	$(PY) -m pip install --quiet --no-deps cleverhans==4.0.0
	# torchattacks runs APGD, APGD-T and Square (and the PGD cross-check); its metadata would
	# pull torchvision, but its attacks only import torch, numpy and scipy.
	$(PY) -m pip install --quiet --no-deps torchattacks==3.5.1
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

serve: venv
	$(PY) -m service --host $(HOST) --port $(PORT) $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT)) --workers $(WORKERS)

PYTEST := $(PY) -m pytest $(if $(filter-out 1,$(TEST_JOBS)),-n $(TEST_JOBS) --dist loadfile)

test: venv
	$(PY) -m ruff check .
	$(PYTEST)

test-fast: venv
	$(PY) -m ruff check .
	$(PYTEST) -m "not slow"

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# These retrain the shipped checkpoints in place, so they pass --force (training refuses to
# replace a finished run's checkpoint without it).
train-mnist: venv
	$(PY) -m training train --dataset mnist --defense none --data-dir ../shared/data/mnist --force --out checkpoints/mnist-undefended
	$(PY) -m training train --dataset mnist --defense cq --levels 2 --data-dir ../shared/data/mnist --force --out checkpoints/mnist-cq2
	$(PY) -m training train --dataset mnist --defense tq --levels 2 --data-dir ../shared/data/mnist --force --out checkpoints/mnist-tq2

# CIFAR-10: the undefended CNN from scratch, then CQ and TQ fine-tuned from it (docs/training.md).
CIFAR_DATA ?= ../shared/data/cifar10
CIFAR_LEVELS ?= 4
CIFAR_FINETUNE = --init-from checkpoints/cifar10-undefended --augment --epochs 10 --lr 5e-4 \
	--schedule cosine --data-dir $(CIFAR_DATA)

train-cifar10: venv
	$(PY) -m training train --dataset cifar10 --defense none --augment --epochs 40 --schedule cosine --data-dir $(CIFAR_DATA) --force --out checkpoints/cifar10-undefended
	$(PY) -m training train --dataset cifar10 --defense cq --levels $(CIFAR_LEVELS) $(CIFAR_FINETUNE) --force --out checkpoints/cifar10-cq$(CIFAR_LEVELS)
	$(PY) -m training train --dataset cifar10 --defense tq --levels $(CIFAR_LEVELS) $(CIFAR_FINETUNE) --force --out checkpoints/cifar10-tq$(CIFAR_LEVELS)

# The level sweep behind the choice of CIFAR_LEVELS: CQ and TQ at L = 2, 4, 8, fine-tuned alike
# (the chosen L's pair is what train-cifar10 makes; the others are not shipped).
train-cifar10-sweep: venv
	for defense in cq tq; do for levels in 2 4 8; do \
	  $(PY) -m training train --dataset cifar10 --defense $$defense --levels $$levels $(CIFAR_FINETUNE) \
	    --force --out checkpoints/cifar10-$$defense$$levels || exit 1; \
	done; done

bench-train: venv
	$(PY) benchmarks/train_throughput.py
