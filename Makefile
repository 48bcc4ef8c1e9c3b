# make train: a fresh venv, then train the paper's mmnist model on generated Moving MNIST.
# make test:  the same venv, then lint and the whole test suite (tiny configs, ~12 min on 2 cores).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

$(BIN)/.installed: requirements.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	touch $@

# the oneDNN convolutions (CPU); ext/build.py prints one line and exits 0 where it cannot build
ext/.built: ext/onednn_conv.cc ext/build.py $(BIN)/.installed
	$(BIN)/python ext/build.py
	touch $@

.PHONY: setup train test lint bench
setup: $(BIN)/.installed ext/.built

train: setup
	$(BIN)/python train.py --config configs/mmnist.yml $(ARGS)

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q tests

bench: setup
	$(BIN)/python bench.py $(ARGS)
