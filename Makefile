# make demo:  a fresh venv, then a 300-step demo of the paper's mmnist model (batch 8) on generated Moving MNIST.
# make train: the same venv, then the paper's full mmnist run (6,000 steps at batch 50: 7-22 h on 2 CPU cores).
# make test:  the same venv, then lint and the whole test suite (tiny configs; 10.8 min on 2 CPU cores on 2026-12-06, target under 15).
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

DEMO := --batch_size 8 --max_steps 300 --save_scalars_every 25 --save_gifs_every 150 --save_model_every 100 \
	--run_name demo --seed 1

.PHONY: setup demo train test lint bench
setup: $(BIN)/.installed ext/.built

demo: setup
	$(BIN)/python train.py --config configs/mmnist.yml $(DEMO) $(ARGS)

train: setup
	$(BIN)/python train.py --config configs/mmnist.yml $(ARGS)

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests  # a test file per worker, one per core

bench: setup
	$(BIN)/python bench.py $(ARGS)
