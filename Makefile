# The verbs a newcomer needs. `make serve` and `make test` work on a fresh clone: both
# create the virtual environment first when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
DATA_DIR ?=
TRAIN_ARGS ?=
SOAK_ARGS ?=

.PHONY: install serve train test lint fmt bench bench-mirror profile soak clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

serve: install
	PORT=$(PORT) PYTHON=$(BIN)/python bin/serve

train: install
	$(BIN)/python -m training $(if $(DATA_DIR),--data-dir $(DATA_DIR)) --logdir runs/cnn $(TRAIN_ARGS)

test: install
	$(BIN)/python -m pytest

# Load benchmark (needs wrk: apt-get install wrk); writes docs/benchmarks.md.
bench: install
	$(BIN)/python -m benchmarks.load --sweep

# Mirror averaging's cost and accuracy, the shipped model against its bare network (needs
# DATA_DIR, the Fashion-MNIST files, and wrk); writes docs/mirror-averaging.md.
bench-mirror: install
	$(BIN)/python -m benchmarks.mirror_cost --data-dir $(DATA_DIR)

# Where a loaded worker's time goes (py-spy, wrk); writes docs/profile.json and the Profile
# section of docs/benchmarks.md.
profile: install
	$(BIN)/python -m benchmarks.gil_profile

# Soak: mixed good and bad traffic for 5 minutes; writes docs/soak.md.
soak: install
	$(BIN)/python -m benchmarks.soak $(SOAK_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache runs
