# Two commands do all the setup on a fresh machine: `make test` and `make bench`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
FFCV_STAMP := $(VENV)/.installed-ffcv
# Two pytest workers: most tests wait on Ray start-up and subprocesses, so two overlap well on 2 cores
# (each test's Ray cluster is private to it). PYTEST_ARGS='-n 0' runs them one at a time.
PYTEST_ARGS ?= -n 2 --dist worksteal
SWEEP_ARGS ?=

.PHONY: test bench install ffcv lint clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Re-installs only when pyproject.toml changes, so a second `make test` installs nothing new.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(STAMP)

# FFCV is an optional extra that needs system libraries; scripts/install_ffcv.sh installs them where
# it can (root with apt). If it cannot, the FFCV tests fail loudly rather than being skipped.
$(FFCV_STAMP): scripts/install_ffcv.sh | $(STAMP)
	-bash scripts/install_ffcv.sh $(VENV) && touch $@

ffcv: $(FFCV_STAMP)

test: $(STAMP) $(FFCV_STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

# The main job: the `quick` matrix (4 small models x 2 learning rates on the full CIFAR-10 training
# split) as a two-phase local Ray Tune sweep: an ASHA search with one seed, then the best learning rate
# of each model again at full budget with 2 seeds. The sweep itself merges results/*.csv, regenerates
# docs/leaderboard.md and ends with the ranked table, so that table is the last thing printed.
# Data: $$HARNESS_DATA_DIR or ./data.
BENCH_ARGS ?= --rerun-top 1 --seeds 2
bench: $(STAMP)
	$(BIN)/harness sweep --matrix quick $(BENCH_ARGS) $(SWEEP_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check harness architectures loaders tests

clean-venv:
	rm -rf $(VENV)
