# The two commands of the README's Quick start: `make demo` and `make test`.
# Both create .venv when it is missing and install the project into it.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch/torchvision pinned to the releases on this machine's disk (CUDA build, runs on CPU too).
# Override on a machine with other wheels, e.g. `make test TORCH_SPEC="torch torchvision"`.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed-dev

.PHONY: demo test venv benchmark clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip || echo "note: pip could not be upgraded; continuing with the bundled one"

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e '.[dev,line,export]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/cell demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The cell's CPU benchmarks (results in benchmarks/results/); the detector benchmark needs a dataset and
# is run per method: python -m benchmarks.bench_detectors --method M --dataset ../shared/data/bottle
CELL_BENCHMARKS = render store robot calibration hardware labelling signals cli

benchmark: $(STAMP)
	set -e; for b in $(CELL_BENCHMARKS); do echo "== bench_$$b"; $(BIN)/python -m benchmarks.bench_$$b; done

clean:
	rm -rf $(VENV) .pytest_cache
