# Two entry points of the Quick start: `make demo` and `make test`. Both create .venv if needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch/torchvision pinned to the releases that lie on the build machines' disk (fast, offline-friendly installs).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test test-fast test-portable lint bench clean

$(BIN)/isplit-export: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH_PINS)
	$(BIN)/pip install -q -e ".[export,dev,serve]"
	# tensorrt-stubs declares a dependency on the real tensorrt wheel, which needs a GPU: stubs only.
	# PyPI has no tensorrt-stubs 11.x (latest 10.13.0.35.1, `pip index versions tensorrt-stubs`, 2026-11-30),
	# so trt_backend.py is type-checked against 10.x only: see isplit_export/profiles/README.md, "TensorRT 10 and 11".
	$(BIN)/pip install -q --no-deps "tensorrt-stubs==10.13.0.35.1"
	touch $@

install: $(BIN)/isplit-export

demo: install
	$(BIN)/isplit-export efficientnet_lite0 --top 3 --target onnx --out out/demo-bundle --force

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(MAKE) --no-print-directory test-portable
	$(BIN)/python -m pytest -q

# The INT8 kernel-agreement test once more on an emulated AVX2 CPU without VNNI (qemu-user's Haswell
# model), the CPU class whose u8 x s8 kernels saturate unless session.x64quantprecision is on
# (docs/int8.md). Torch-free and fixture-free (--noconftest): about 6 s under emulation on an EPYC.
# The -cpu minus-list drops the features qemu's TCG cannot emulate (one warning line each otherwise).
QEMU ?= qemu-x86_64
QEMU_CPU := Haswell,-pcid,-x2apic,-tsc-deadline,-hle,-invpcid,-rtm
PORTABLE_TESTS := tests/unit/exporting/test_int8_kernels.py
test-portable: install
	@if [ "$$(uname -m)" != x86_64 ]; then \
		echo "test-portable: skipped: emulates an x86 CPU, this machine is $$(uname -m)"; \
	elif ! command -v $(QEMU) >/dev/null 2>&1; then \
		echo "test-portable: WARNING: $(QEMU) not found (apt-get install qemu-user): the INT8 kernel-agreement test did not run on an AVX2-without-VNNI CPU"; \
	else \
		echo "test-portable: $(PORTABLE_TESTS) under $(QEMU) -cpu Haswell (AVX2, no VNNI)"; \
		$(QEMU) -cpu $(QEMU_CPU) $(BIN)/python -m pytest -q --noconftest -p no:cacheprovider $(PORTABLE_TESTS); \
	fi

# The inner loop: tests/unit, which trains nothing and runs no whole pipeline (docs/testing.md); tests/e2e
# holds the rest (whole pipelines, training, torchrun, servers) and runs in `make test`.
test-fast: install
	$(BIN)/python -m pytest -q tests/unit

bench: install
	$(BIN)/python benchmarks/bench_ranking.py
	$(BIN)/python benchmarks/bench_latency.py

clean:
	rm -rf $(VENV) out .mypy_cache .ruff_cache .pytest_cache
