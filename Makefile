# The verbs a newcomer needs. `make serve` and `make test` work on a fresh clone: both
# create the virtual environment first when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
DATA_DIR ?=
TRAIN_ARGS ?=
SOAK_ARGS ?=
BENCH_BASELINE ?=
JSON_PATHS_ARGS := $(if $(BENCH_BASELINE),--baseline $(BENCH_BASELINE))

# The lock files pin every package, dependencies included, with hashes, for every platform
# (environment markers): the same versions in .venv, in CI and in the image.
LOCK_FLAGS := --universal --python-version 3.11 --generate-hashes --quiet \
	--custom-compile-command "make lock"

.PHONY: install lock protos serve train train-baseline test test-fast lint fmt bench bench-json bench-grpc bench-mirror \
	bench-runtimes bench-path bench-slow bench-decode bench-image profile soak clean

install: $(VENV)/.installed

# --no-deps: the lock already lists every dependency; pip check proves it is complete.
$(VENV)/.installed: requirements-dev.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements-dev.lock
	$(BIN)/python -m pip check
	touch $@

# Regenerate both locks after editing requirements*.txt (LOCK_ARGS=--upgrade to move every
# unpinned dependency to its newest release). The runtime lock is constrained by the dev lock,
# so the image runs exactly the versions the tests ran.
lock: install
	$(BIN)/uv pip compile $(LOCK_FLAGS) $(LOCK_ARGS) requirements-dev.txt -o requirements-dev.lock
	$(BIN)/uv pip compile $(LOCK_FLAGS) requirements.txt -c requirements-dev.lock -o requirements.lock

# Regenerate the gRPC message classes, service/grpc/generated/, from the .proto files in
# service/grpc/protos/ (grpcio-tools); tests/test_grpc_protos.py fails while they differ.
protos: install
	$(BIN)/python -m service.grpc.generate

serve: install
	PORT=$(PORT) PYTHON=$(BIN)/python bin/serve

# The shipped model's recipe (the defaults), as the next version in models/fashion_mnist.
train: install
	$(BIN)/python -m training $(if $(DATA_DIR),--data-dir $(DATA_DIR)) --logdir runs/cnn $(TRAIN_ARGS)

# The dense baseline by the same recipe, beside the CNN (docs/training.md); not served: its
# version folder goes to runs/dfn/models.
train-baseline: install
	$(BIN)/python -m training $(if $(DATA_DIR),--data-dir $(DATA_DIR)) --model dfn \
		--logdir runs/dfn --output runs/dfn/models $(TRAIN_ARGS)

test: install
	$(BIN)/python -m pytest

# Unit and in-process HTTP tests (Flask's test client) only: no test that starts another program
# or trains a model beyond the session's tiny one (the `integration` mark, tests/conftest.py).
test-fast: install
	$(BIN)/python -m pytest -m "not slow and not container and not dataset and not integration"

# Load benchmark (needs wrk: apt-get install wrk); writes docs/benchmarks.md, then the JSON
# paths' docs/json-paths.md (bench-json, below), then gRPC beside REST (bench-grpc, below).
bench: install
	$(BIN)/python -m benchmarks.load --sweep
	$(BIN)/python -m benchmarks.json_paths $(JSON_PATHS_ARGS)
	$(BIN)/python -m benchmarks.grpc_load

# /v2 infer and /predict with pixel arrays, batch 1 and 64; BENCH_BASELINE=REF also measures
# that commit, side by side. Writes docs/json-paths.md.
bench-json: install
	$(BIN)/python -m benchmarks.json_paths $(JSON_PATHS_ARGS)

# gRPC ModelInfer beside REST /v2 infer (binary tensors) and multipart /predict, batch 1 and 64,
# concurrency 1, 8 and 32 (needs h2load: apt-get install nghttp2-client); writes docs/grpc.json
# and the section "gRPC and REST" of docs/benchmarks.md.
bench-grpc: install
	$(BIN)/python -m benchmarks.grpc_load

# Mirror averaging's cost and accuracy, the shipped model against its bare network (needs
# DATA_DIR, the Fashion-MNIST files, and wrk); writes docs/mirror-averaging.md.
bench-mirror: install
	$(BIN)/python -m benchmarks.mirror_cost --data-dir $(DATA_DIR)

# Each runtime's test accuracy, distance from the SavedModel's answers and cost (needs
# DATA_DIR, the Fashion-MNIST files); writes docs/runtimes.md.
bench-runtimes: install
	$(BIN)/python -m benchmarks.runtimes --data-dir $(DATA_DIR)

# Each step of one request in-process, beside what it replaced; writes docs/request-path.md.
bench-path: install
	$(BIN)/python -m benchmarks.request_path

# The container image on the stand-in base: its size beside the base's, cold starts, memory
# and CPU per request under load (needs podman, runc and wrk); writes docs/image.json and the
# section "The image" of docs/benchmarks.md, from which the resources of docker-compose.yml and
# deploy/k8s/ come (docs/operations.md, "Resources").
bench-image: install
	$(BIN)/python -m benchmarks.image

# The slowest and most memory-hungry image of each format, with and without the decoding
# budget (with DATA_DIR, also what decoding a large JPEG smaller does to the model input);
# writes docs/decode-worst-case.json and the tables of docs/security.md, "The decoding budget".
bench-decode: install
	$(BIN)/python -m benchmarks.decode_worst_case $(if $(DATA_DIR),--data-dir $(DATA_DIR))

# Slow and silent clients against gunicorn directly (before and after service/worker.py) and
# through the nginx front door (needs nginx and wrk); writes docs/slow-clients.json and the
# table of docs/security.md, "Slow clients and the front door".
bench-slow: install
	$(BIN)/python -m benchmarks.slow_clients

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
	$(BIN)/mypy

fmt: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache runs
