# Every target builds or updates .venv itself, so each works as the first command on a
# fresh machine that has only Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test lint bench clean install

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "jobqueue needs Python 3.11 or newer (found $$($(PYTHON) --version))"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,redis,prometheus]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/jobqueue demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check jobqueue tests alembic
	$(BIN)/ruff format --check jobqueue
	$(BIN)/mypy --strict jobqueue

bench: $(STAMP)
	$(BIN)/jobqueue bench

clean:
	-test -x $(BIN)/jobqueue && $(BIN)/jobqueue db stop
	rm -rf $(VENV) .jobqueue dist build .pytest_cache .mypy_cache .ruff_cache .hypothesis
