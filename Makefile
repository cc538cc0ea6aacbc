# The two commands: `make demo` (the main job) and `make test` (the whole suite, as CI runs it).
# Both set up everything first: Debian packages (as root), a virtual environment, pinned deps.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bootstrap system-deps clean bench bench-e2e fuzz

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

# the component benchmarks (print numbers; not timed tests): inputs, AE scorer, online detectors
bench: bootstrap
	$(BIN)/python tests/bench/bench_inputs.py
	$(BIN)/python tests/bench/bench_ae_scorer.py
	$(BIN)/python tests/bench/bench_online_detectors.py
	$(BIN)/python tests/bench/bench_hot_path.py --assets 1000

# the end-to-end benchmark (docs/performance.md): real agent, Mosquitto, InfluxDB; ~10 min.
# BENCH_ARGS=--quick for a 2-minute run; see tests/bench/bench_e2e.py --help
bench-e2e: bootstrap
	$(BIN)/python tests/bench/bench_e2e.py $(BENCH_ARGS)

# Long fuzzing of every decoder of outside bytes (tests/fuzz): each target for up to
# FUZZ_SECONDS at low priority; prints the examples run per target (FUZZ_K: pytest -k).
FUZZ_SECONDS ?= 60
fuzz: $(STAMP)
	$(BIN)/python tests/fuzz/run_long.py --seconds $(FUZZ_SECONDS) $(if $(FUZZ_K),-k $(FUZZ_K))

clean:
	rm -rf $(VENV) .demo .mypy_cache .ruff_cache
