# torchplastic developer entry points. `make test` on a fresh clone sets everything up.
#
#   make test        system packages (apt-get, if missing) → .venv with torch==2.11.0 → CMake build
#                    (library, _C, C++ tests) → editable install → ctest → pytest
#   make demo        set up as above, then train the pattern-memorization demo (~1 min)
#   make test-asan   GoogleTest under AddressSanitizer and UndefinedBehaviorSanitizer, then the
#                    CUDA kernels' emulation under them (test-emulated-asan); build-asan only
#                    builds them
#   make test-cpp    GoogleTest only          make test-python   pytest only
#   make bench       CPU benchmark: fused op vs the reference (benchmarks/bench_cpu.py)
#   make gpu-check   on a GPU machine: build, CUDA tests, GPU benchmarks, ncu, compute-sanitizer;
#                    logs under $$OUT
#   make docs        the documentation site (Sphinx, warnings are errors) into $(BUILD)/docs
#   make clean       remove the build (keeps .venv)

PYTHON3 ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
BUILD   ?= build
CMAKE_ARGS ?=

.PHONY: all demo test build-asan test-asan test-emulated-asan test-cpp test-python test-install build deps system-deps bench gpu-check docs clean

all: build

# Debian packages the build needs; installed only where missing (CI machines start bare).
system-deps:
	@bash scripts/system_deps.sh

$(VENV)/.deps: requirements-dev.txt
	@test -x $(PY) || $(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -r requirements-dev.txt
	@touch $@

deps: system-deps $(VENV)/.deps

$(BUILD)/build.ninja: | deps
	cmake -S . -B $(BUILD) -G Ninja -DBUILD_TESTING=ON -DPython3_EXECUTABLE=$(abspath $(PY)) \
	    -DCMAKE_PREFIX_PATH=$$($(PY) -c 'import torch.utils; print(torch.utils.cmake_prefix_path)') \
	    $(CMAKE_ARGS)

# The editable install points .venv at python/, where CMake puts _C and libtorchplastic.
$(VENV)/.installed: setup.py pyproject.toml | $(BUILD)/build.ninja
	TORCHPLASTIC_BUILD_DIR=$(BUILD) $(PY) -m pip install -q --no-build-isolation --no-deps -e .
	@touch $@

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD)
	@$(MAKE) --no-print-directory $(VENV)/.installed

test-cpp: build
	ctest --test-dir $(BUILD) --output-on-failure

# --durations: the slowest tests in the log, where a CI run that grows looks first.
test-python: build
	$(PY) -m pytest -q --durations=15 tests/python

# The installed library used the way a C++ user uses it: cmake --install into a scratch prefix,
# then examples/cpp built against it with find_package(TorchPlastic) and run for a few steps;
# then a model exported and compiled by AOTInductor in Python, run by the C++ deploy program,
# whose outputs must equal Python's.
test-install: build
	rm -rf $(BUILD)/prefix $(BUILD)/example
	cmake --install $(BUILD) --prefix $(BUILD)/prefix > /dev/null
	cmake -S examples/cpp -B $(BUILD)/example -G Ninja \
	    -DCMAKE_PREFIX_PATH="$(abspath $(BUILD)/prefix);$$($(PY) -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')" > /dev/null
	cmake --build $(BUILD)/example
	$(BUILD)/example/train_pattern --steps 3 --batch 4
	$(BUILD)/example/quickstart
	$(PY) examples/export_model.py --out $(BUILD)/example/pt2 --check $(BUILD)/example/deploy

test: test-cpp test-python test-install

# The documentation site: docs/ (Markdown, MyST) plus the API reference from the docstrings.
docs: build
	$(PY) -m sphinx -W --keep-going -q -b html docs $(BUILD)/docs
	@echo "docs: $(BUILD)/docs/index.html"

# The README's first command: set up as `make test` does, then train the pattern-memorization
# task of Miconi et al. 2018 (plastic vs non-plastic RNN), about a minute on 2 cores.
demo: build
	$(PY) examples/pattern.py --out out/pattern

# GoogleTest under AddressSanitizer + UndefinedBehaviorSanitizer (CPU build; torch itself is
# not instrumented, so leak checking, which would report torch's globals, is off). The kernels
# for generic and AVX2 only: the instrumented kernel objects are most of a CI run's time, and
# AVX-512's are the same templates with wider vectors (the plain build tests them). The tests
# run twice, with the kernels the machine would choose (AVX2 where it runs them) and with the
# generic ones (TORCHPLASTIC_CPU_ISA=generic), whose instrumented objects are built either way.
ASAN_BUILD ?= build-asan
SANITIZER_OPTIONS = ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
build-asan: deps
	cmake -S . -B $(ASAN_BUILD) -G Ninja -DBUILD_TESTING=ON -DWITH_CUDA=OFF -DTORCHPLASTIC_PYTHON=OFF \
	    -DTORCHPLASTIC_SANITIZE=ON -DTORCHPLASTIC_CPU_ISAS='generic;avx2' \
	    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPython3_EXECUTABLE=$(abspath $(PY)) \
	    -DCMAKE_PREFIX_PATH=$$($(PY) -c 'import torch.utils; print(torch.utils.cmake_prefix_path)') \
	    -DTORCHPLASTIC_PYTHON_OUTPUT_DIR=$(abspath $(ASAN_BUILD))/lib > /dev/null
	cmake --build $(ASAN_BUILD)

test-asan: build-asan
	$(SANITIZER_OPTIONS) ctest --test-dir $(ASAN_BUILD) --output-on-failure
	TORCHPLASTIC_CPU_ISA=generic $(SANITIZER_OPTIONS) ctest --test-dir $(ASAN_BUILD) --output-on-failure
	@$(MAKE) --no-print-directory test-emulated-asan

# The CUDA kernels' memory checker on the CPU: the emulated kernels built under the sanitizers
# (tests/cuda_emulation in $(ASAN_BUILD)), loaded into pytest with AddressSanitizer's runtime
# preloaded, on a share of test_cuda_emulated.py's cases (every rule, mode and modulation
# source and the plastic LSTM in clusters of 4 and off chip, the float forward's row loops, the
# benchmark's layouts, the register forward with rule abcd's coefficients, η per connection and
# lengths, the backward's prefetch hooks off chip, whose addresses the emulation reads). The
# package itself is the plain build's. Each test runs on one core, so two processes take half
# the tests each (pytest's --shard, tests/python/conftest.py).
ASAN_EMULATED_TESTS ?= (float64_matches and (cluster4 or off_chip)) or (rows and hebb) or benchmark \
	or (register_forward and (abcd or connection or lengths)) or (prefetch_hooks and off_chip)
ASAN_EMULATED_PYTEST = $(SANITIZER_OPTIONS) LD_PRELOAD=$$($(CXX) -print-file-name=libasan.so) \
	TORCHPLASTIC_EMULATION_LIBRARY=$(abspath $(ASAN_BUILD))/tests/cuda_emulation/libtorchplastic_cuda_emulated.so \
	$(PY) -m pytest -q -p no:cacheprovider tests/python/test_cuda_emulated.py -k "$(ASAN_EMULATED_TESTS)"
test-emulated-asan: build
	$(ASAN_EMULATED_PYTEST) --shard 1/2 & first=$$!; status=0; \
	$(ASAN_EMULATED_PYTEST) --shard 2/2 || status=$$?; \
	wait $$first || status=$$?; exit $$status

bench: build
	$(PY) benchmarks/bench_cpu.py

gpu-check:
	bash scripts/gpu_check.sh

clean:
	rm -rf $(BUILD) python/torchplastic/*.so $(VENV)/.installed
