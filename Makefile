# Two entry points (see README "Quick start"): `make demo` and `make test`.
# Both create .venv and install the package; TORCH pins the CPU wheel (override for CUDA:
# make demo TORCH="torch==2.13.0 --index-url ...").
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: demo test lint clean

$(BIN)/segnet: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e .
	@touch $@

$(VENV)/.dev: $(BIN)/segnet
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $@

demo: $(BIN)/segnet
	$(BIN)/segnet demo --out outputs/demo

test: $(VENV)/.dev
	$(BIN)/python -m pytest -q

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) outputs
