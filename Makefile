# Two entry points of the Quick start: `make demo` and `make test`. Both create .venv if needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch/torchvision pinned to the releases that lie on the build machines' disk (fast, offline-friendly installs).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test test-fast lint typecheck bench clean

$(BIN)/isplit-export: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH_PINS)
	$(BIN)/pip install -q -e ".[export,dev,serve]"
	# tensorrt-stubs declares a dependency on the real tensorrt wheel, which needs a GPU: stubs only.
	# PyPI has no tensorrt-stubs 11.x (latest 10.13.0.35.1, `pip index versions tensorrt-stubs`, 2026-11-30),
	# so trt_backend.py is type-checked against 10.x only: see targets/README.md, "TensorRT 10 and 11".
	$(BIN)/pip install -q --no-deps "tensorrt-stubs==10.13.0.35.1"
	touch $@

install: $(BIN)/isplit-export

demo: install
	$(BIN)/isplit-export efficientnet_lite0 --top 3 --target onnx --out bundle --force

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

# The inner loop: everything but the end-to-end tests (marked e2e: whole pipelines, torchrun, training).
test-fast: install
	$(BIN)/python -m pytest -q -m "not e2e"

bench: install
	$(BIN)/python benchmarks/bench_ranking.py
	$(BIN)/python benchmarks/bench_latency.py

clean:
	rm -rf $(VENV) bundle .mypy_cache .ruff_cache .pytest_cache
