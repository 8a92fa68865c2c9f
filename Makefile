# The quick start: `make demo` and `make test`, each from a fresh clone.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Kernels compiled by the tests go to a cache inside the checkout, so a run starts from what
# this checkout compiled before and never from a stale cache of another version.
export GRAPHC_CACHE_DIR ?= $(CURDIR)/.cache/graphc

.PHONY: demo test lint bench onnx-conformance clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Tests run in parallel processes (pytest-xdist), one per core by default (TEST_JOBS=1: serially);
# a test file stays on one process, so its module fixtures and in-memory kernels are built once.
# Files are handed out in the order tests/conftest.py gives them (its slowest files first).
TEST_JOBS ?= auto
XDIST = -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder
test: $(STAMP) lint
	$(VENV)/bin/pytest -q $(XDIST) tests --ignore=tests/cuda
	NUMBA_ENABLE_CUDASIM=1 $(VENV)/bin/pytest -q $(XDIST) tests/cuda

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[compare]'
	$(VENV)/bin/graphc bench --compare torch,torch.compile,onnxruntime

# Every onnx node test on graphc's ONNX backend (CPU kernels); prints passes, failures, skipped ops.
onnx-conformance: $(STAMP)
	$(PY) -m graphc.onnx.conformance --backend cpu

clean:
	rm -rf $(VENV) .cache .pytest_cache .hypothesis
