# Every target builds or updates .venv itself, so each works as the first command on a
# fresh machine that has only Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test lint bench clean install chaos soak nightly

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "jobqueue needs Python 3.11 or newer (found $$($(PYTHON) --version))"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,redis,prometheus,bench,web,otel]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/jobqueue demo

# The suite waits far more than it computes (4:53 of CPU in a 14-minute serial run on 2
# cores), so all of it but the tests marked `serial` runs on 2 pytest-xdist workers, one test
# file per worker at a time. The serial ones run alone afterwards: every chaos test (it
# compares throughput with a baseline taken just before the fault, which a neighbour's load
# would skew; it prints the chaos figure table) and the few that read what the whole server
# holds (the oldest xmin, transactions in flight). PYTEST_ARGS: extra options for both runs.
test: $(STAMP)
	@rc=0; \
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not serial" $(PYTEST_ARGS) || rc=$$?; \
	$(BIN)/python -m pytest -m serial $(PYTEST_ARGS) || rc=$$?; \
	exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check jobqueue tests alembic
	$(BIN)/ruff format --check jobqueue
	$(BIN)/mypy --strict jobqueue

bench: $(STAMP)
	$(BIN)/jobqueue bench

# The chaos suite at full scale (RELIABILITY.md 4.3): real workers killed, paused, cut off,
# skewed; PostgreSQL crash-restarted and filled up. `make test` runs the same tests at quick
# scale. Prints a figure table and writes chaos-results/chaos.json. Takes ~30 min on 2 cores.
CHAOS_ARGS ?=
chaos: $(STAMP)
	CHAOS_SCALE=full CHAOS_JSON=chaos-results/chaos.json $(BIN)/python -m pytest tests/chaos -q $(CHAOS_ARGS)

# Not in `make test` (RELIABILITY.md 4.3, nightly tier). `make soak`: SOAK-01, SOAK-02, OPS-01, OVERLOAD-01
# and OPS-02 at plan size with real worker processes (about an hour on 2 cores;
# SOAK_SCALE=quick: a few minutes); figure table printed, JSON in soak-results/soak.json.
# `make nightly`: MODEL-01 at 5,000 examples and FENCE-01 over 1,000 randomized runs.
SOAK_SCALE ?= full
MODEL_EXAMPLES_NIGHTLY ?= 5000
FENCE_RUNS_NIGHTLY ?= 1000

soak: $(STAMP)
	JOBQUEUE_SOAK=1 SOAK_SCALE=$(SOAK_SCALE) $(BIN)/python -m pytest tests/soak -s -q $(PYTEST_ARGS)

nightly: $(STAMP)
	MODEL_EXAMPLES=$(MODEL_EXAMPLES_NIGHTLY) FENCE_RUNS=$(FENCE_RUNS_NIGHTLY) $(BIN)/python -m pytest -s -q \
		--durations=0 tests/integration/test_sql_model.py::test_queue_state_machine \
		tests/integration/test_sql_core.py::test_stale_tokens_in_randomized_interleavings $(PYTEST_ARGS)

clean:
	-test -x $(BIN)/jobqueue && $(BIN)/jobqueue db stop
	rm -rf $(VENV) .jobqueue dist build .pytest_cache .mypy_cache .ruff_cache .hypothesis chaos-results soak-results

# Procrastinate and PgQueuer under the same enqueue, drain and latency workloads, on the same
# server, in the same run (ratios jobqueue / peer). They live in their own virtual
# environment with exact pins (bench/peers/requirements.txt), never in jobqueue's.
PEERS_VENV := .bench-peers/venv
PEERS_STAMP := $(PEERS_VENV)/.installed
BENCH_PEERS_ARGS ?=

.PHONY: bench-peers

$(PEERS_STAMP): bench/peers/requirements.txt
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PEERS_VENV)/bin/python -m pip install --quiet -r bench/peers/requirements.txt
	touch $(PEERS_STAMP)

bench-peers: $(STAMP) $(PEERS_STAMP)
	$(BIN)/jobqueue bench --only baseline,enqueue,drain,latency --peers $(PEERS_VENV)/bin/python \
		--json bench-results/peers.json $(BENCH_PEERS_ARGS)
