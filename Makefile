# Two commands do all the setup on a fresh machine: `make test` and `make bench`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
FFCV_STAMP := $(VENV)/.installed-ffcv
PYTEST_ARGS ?=
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

# The main job: the `quick` matrix (small models x 2 strategies on a CIFAR-10 subset) as a local Ray
# Tune ASHA sweep, then the leaderboards and docs/leaderboard.md. Data: $$HARNESS_DATA_DIR or ./data.
bench: $(STAMP)
	$(BIN)/harness sweep --matrix quick $(SWEEP_ARGS)
	$(BIN)/harness leaderboard

lint: $(STAMP)
	$(BIN)/ruff check harness architectures loaders tests

clean-venv:
	rm -rf $(VENV)
