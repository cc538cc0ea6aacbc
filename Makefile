# The two commands: `make demo` (the main job) and `make test` (the whole suite, as CI runs it).
# Both set up everything first: Debian packages (as root), a virtual environment, pinned deps.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bootstrap system-deps clean bench fuzz

demo: bootstrap
	$(BIN)/gearwatch demo

test: bootstrap lint typecheck pytest

bootstrap: system-deps $(STAMP)

system-deps:
	@bash deploy/bootstrap-system.sh

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

lint:
	$(BIN)/ruff check .

typecheck:
	$(BIN)/mypy $(wildcard edge_agent models trainer simulators gearwatch tests)

pytest:
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

bench: bootstrap
	$(BIN)/python tests/bench/run_all.py

# Long fuzzing of every decoder of outside bytes (tests/fuzz): about FUZZ_EXAMPLES examples per
# target (heavy targets fewer), at low priority; prints the examples run per target.
FUZZ_EXAMPLES ?= 20000
FUZZ_TARGETS ?= tests/fuzz
fuzz: $(STAMP)
	GEARWATCH_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) nice -n 10 $(BIN)/python -m pytest -q \
		-p no:cacheprovider -o timeout=0 $(FUZZ_TARGETS)

clean:
	rm -rf $(VENV) .demo .mypy_cache .ruff_cache
