# lorq — build, setup and test entry points.
#
#   make            build bin/: lorq (CLI), lorq-worker, lorq-gateway, lorq-autoscaler
#   make setup      install Debian packages, the Python test venv and the bundled model
#   make test       setup, then every test (C units under ASan/UBSan, Python integration, short fuzz runs)
#   make fuzz       run each libFuzzer target for FUZZ_SECONDS (default 60)
#   make bench-cpu  CPU prefill/decode throughput against the memory-bandwidth bound
#   make test-gpu   CUDA backend against the CPU backend (kernels, whole model, mixed adapters); SKIPPED without a GPU
#   make bench-gpu  GPU decode throughput at Mistral-7B shape (dummy weights) against the HBM roofline
#   make CUDA=0     build without the CUDA backend (the default when nvcc is not found)
#   make run        setup, build, then bin/lorq serve: Redis, gateway and workers (Ctrl-C stops them)
#
# Sources are found by wildcard: a new common/*.c joins libcommon, a new cli/*.c
# joins $(BIN)/lorq, a new tests/unit/test_*.c becomes a unit-test binary and a new
# tests/fuzz/fuzz_*.c a fuzz target.

CC      ?= gcc
FUZZ_CC ?= clang
PKGS     = jansson libpcre2-8 libutf8proc openblas hiredis msgpack libevent libcurl libcrypto
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN     = -std=gnu11 -Wall -Wextra -Werror
INCLUDES = -Icommon -Ikernels -Iworker -Igateway -Iops
CFLAGS  ?= -O2 -g
CFLAGS  += $(WARN) -D_GNU_SOURCE $(INCLUDES) $(PKG_CFLAGS) -MMD -MP
LDLIBS   = $(PKG_LIBS) -lm -lpthread
SAN      = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

# B and BIN let parallel builds of one tree keep apart (make B=build-x BIN=bin-x).
B   ?= build
BIN ?= bin

COMMON_SRC = $(wildcard common/*.c)
# The engine: compute backends and the model, everything the worker runs.
ENGINE_SRC = $(wildcard kernels/cpu/*.c) kernels/select.c $(filter-out worker/main.c,$(wildcard worker/*.c))

# The CUDA backend (kernels/cuda/*.cu) joins the engine when nvcc is found, unless CUDA=0.
# It is a fat binary for A100 (sm_80), L4/L40S/RTX 40 (sm_89) and H100/H200 (sm_90a).
# Only lorq and lorq-worker link the CUDA runtime and cuBLAS, dynamically: both load on a
# machine without a GPU driver (libcudart opens the driver at run time; libcuda is never
# linked), and --device auto then falls back to the CPU. The sanitized unit tests stay
# CPU-only: ASan and the CUDA runtime do not mix.
NVCC := $(shell command -v nvcc 2>/dev/null)
CUDA ?= $(if $(NVCC),1,0)
ifeq ($(CUDA),1)
ifeq ($(NVCC),)
$(error CUDA=1 but nvcc is not on PATH)
endif
CUDA_HOME   ?= $(patsubst %/bin/nvcc,%,$(realpath $(NVCC)))
CUDA_ARCHS  ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_89,code=sm_89 -gencode arch=compute_90a,code=sm_90a
NVCCFLAGS   ?= -O3 -std=c++17 $(CUDA_ARCHS) -Xcompiler -Wall,-Wextra,-Werror -Werror all-warnings
CUDA_SRC     = $(wildcard kernels/cuda/*.cu)
CUDA_OBJ     = $(CUDA_SRC:%.cu=$(B)/%.o)
CUDA_LIBS    = -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcudart -lstdc++
ENGINE_LIB   = $(B)/libengine-cuda.a
# select.c with the CUDA entry points in reach; a different object, so CUDA=0 and CUDA=1
# builds can share a build directory.
ENGINE_CUDA_OBJ = $(filter-out $(B)/kernels/select.o,$(ENGINE_SRC:%.c=$(B)/%.o)) $(B)/kernels/select-cuda.o $(CUDA_OBJ)
else
ENGINE_LIB   = $(B)/libengine.a
CUDA_LIBS    =
endif
# Binaries relink when CUDA is switched on or off: the stamp is rewritten (at parse time,
# as a file that always exists, which .SECONDARY cannot skip) only when the setting changes.
CONFIG_STAMP = $(B)/.cuda-config
$(shell mkdir -p $(B); [ "$$(cat $(CONFIG_STAMP) 2>/dev/null)" = "$(CUDA)" ] || echo $(CUDA) > $(CONFIG_STAMP))
GPU_TEST_SRC = $(wildcard tests/gpu/test_*.c)
GPU_TEST_BIN = $(GPU_TEST_SRC:tests/gpu/%.c=$(B)/tests/gpu/%)
# The gateway's modules (HTTP routes, validation, chat templates); main.c is its entry point.
GATEWAY_SRC = $(filter-out gateway/main.c,$(wildcard gateway/*.c))
CLI_SRC    = $(wildcard cli/*.c)
# Launcher pieces shared by bin/lorq (serve) and lorq-autoscaler; autoscaler.c is its entry point.
OPS_SRC    = $(filter-out ops/autoscaler.c,$(wildcard ops/*.c))
OPS_OBJ    = $(OPS_SRC:%.c=$(B)/%.o)
UNIT_SRC   = $(wildcard tests/unit/test_*.c)
FUZZ_SRC   = $(wildcard tests/fuzz/fuzz_*.c)

COMMON_OBJ     = $(COMMON_SRC:%.c=$(B)/%.o)
ENGINE_OBJ     = $(ENGINE_SRC:%.c=$(B)/%.o)
COMMON_SAN_OBJ = $(COMMON_SRC:%.c=$(B)/san/%.o)
ENGINE_SAN_OBJ = $(ENGINE_SRC:%.c=$(B)/san/%.o)
GATEWAY_OBJ     = $(GATEWAY_SRC:%.c=$(B)/%.o)
GATEWAY_SAN_OBJ = $(GATEWAY_SRC:%.c=$(B)/san/%.o)
GATEWAY_FUZ_OBJ = $(GATEWAY_SRC:%.c=$(B)/fuzz/%.o)
COMMON_FUZ_OBJ = $(COMMON_SRC:%.c=$(B)/fuzz/%.o)
CLI_OBJ        = $(CLI_SRC:%.c=$(B)/%.o)
UNIT_BIN       = $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)
FUZZ_BIN       = $(FUZZ_SRC:tests/fuzz/%.c=$(B)/fuzz/bin/%)

FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 5
PYTEST_ARGS ?=

# What a test binary links: its .c and the objects and libraries. The rules' other
# prerequisites are headers from the -MMD dependency files, which the compiler
# would otherwise try to compile on their own.
link_inputs = $(filter %.c %.o %.a,$(1))

# Keep every object: sanitizer and fuzz objects are otherwise deleted as intermediates.
.SECONDARY:

.PHONY: all setup test unit-test py-test test-demo fuzz-build fuzz fuzz-smoke bench-cpu bench-gpu test-gpu clean run
PROGRAMS = $(BIN)/lorq $(if $(wildcard worker/main.c),$(BIN)/lorq-worker) $(if $(wildcard gateway/main.c),$(BIN)/lorq-gateway) $(if $(wildcard ops/autoscaler.c),$(BIN)/lorq-autoscaler)
all: $(PROGRAMS)

$(BIN)/lorq: $(CLI_OBJ) $(B)/libops.a $(ENGINE_LIB) $(B)/libcommon.a $(CONFIG_STAMP)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $(filter-out $(CONFIG_STAMP),$^) $(LDLIBS) $(CUDA_LIBS)

$(BIN)/lorq-worker: $(B)/worker/main.o $(ENGINE_LIB) $(B)/libcommon.a $(CONFIG_STAMP)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $(filter-out $(CONFIG_STAMP),$^) $(LDLIBS) $(CUDA_LIBS)

$(BIN)/lorq-gateway: $(B)/gateway/main.o $(B)/libgateway.a $(B)/libcommon.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BIN)/lorq-autoscaler: $(B)/ops/autoscaler.o $(B)/libops.a $(B)/libcommon.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(B)/libops.a: $(OPS_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/libgateway.a: $(GATEWAY_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/libengine.a: $(ENGINE_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/libcommon.a: $(COMMON_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c -o $@ $<

ifeq ($(CUDA),1)
$(B)/libengine-cuda.a: $(ENGINE_CUDA_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/kernels/select-cuda.o: kernels/select.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -DLQ_HAVE_CUDA -c -o $@ $<

$(B)/kernels/cuda/%.o: kernels/cuda/%.cu
	@mkdir -p $(@D)
	$(NVCC) $(NVCCFLAGS) $(INCLUDES) -MMD -MP -c -o $@ $<

# GPU tests: not sanitized (the CUDA runtime), linked with the CUDA engine.
$(B)/tests/gpu/%: tests/gpu/%.c $(ENGINE_LIB) $(B)/libcommon.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Itests/unit -o $@ $(call link_inputs,$^) $(LDLIBS) $(CUDA_LIBS) -lcmocka
endif

# Unit tests and the objects they link run under AddressSanitizer and UBSan.
$(B)/san/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(SAN) -c -o $@ $<

$(B)/san/libcommon.a: $(COMMON_SAN_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/san/libgateway.a: $(GATEWAY_SAN_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/san/libengine.a: $(ENGINE_SAN_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/tests/%: tests/unit/%.c $(B)/san/libgateway.a $(B)/san/libengine.a $(B)/san/libcommon.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(SAN) -o $@ $(call link_inputs,$^) $(LDLIBS) -lcmocka

# libFuzzer targets: clang, coverage instrumentation plus ASan/UBSan.
FUZZ_FLAGS = -std=gnu11 -g -O1 -D_GNU_SOURCE $(INCLUDES) $(PKG_CFLAGS) -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
$(B)/fuzz/%.o: %.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -c -o $@ $<

$(B)/fuzz/bin/%: tests/fuzz/%.c $(GATEWAY_FUZ_OBJ) $(COMMON_FUZ_OBJ)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer -o $@ $(call link_inputs,$^) $(LDLIBS)

setup:
	@bash ops/setup.sh

unit-test: $(UNIT_BIN)
	@bash tests/run_unit.sh $(UNIT_BIN)

py-test: all
	.venv/bin/python -m pytest -q tests $(PYTEST_ARGS)

# The demo adapters' task accuracy through the real stack alone (py-test runs it
# too): 900 requests, about 2 minutes on 2 cores.
test-demo: setup
	@$(MAKE) --no-print-directory all
	.venv/bin/python -m pytest -q -s tests/test_demo_accuracy.py

fuzz-build: $(FUZZ_BIN)

# The smoke run in `make test` starts from a fixed seed, so a test run explores
# the same inputs each time and a red run reproduces; `make fuzz` draws a new
# seed each time to find what the smoke run cannot.
fuzz-smoke: $(FUZZ_BIN)
	@FUZZ_SEED=1 bash tests/fuzz/run.sh $(FUZZ_SMOKE_SECONDS) $(FUZZ_BIN)

fuzz: $(FUZZ_BIN)
	@bash tests/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_BIN)

# Each GPU test binary reports SKIPPED (exit 77, counted as skipped) when no GPU is visible.
ifeq ($(CUDA),1)
test-gpu: $(GPU_TEST_BIN)
	@bash tests/gpu/run.sh $(GPU_TEST_BIN)
else
test-gpu:
	@echo "test-gpu: SKIPPED: built without CUDA (nvcc not found, or CUDA=0)"
endif

# Decode throughput at Mistral-7B shape with dummy weights; exits with a message without a GPU.
bench-gpu: all
	$(BIN)/lorq bench --device cuda --load-format dummy --model tests/data/configs/mistral-7b $(BENCH_ARGS)

test: setup
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory unit-test
	@$(MAKE) --no-print-directory test-gpu
	@$(MAKE) --no-print-directory fuzz-smoke
	@$(MAKE) --no-print-directory py-test

# CPU throughput against the memory-bandwidth bound, on the bundled model.
bench-cpu: setup
	@$(MAKE) --no-print-directory all
	$(BIN)/lorq bench --model models/SmolLM2-135M-Instruct

# Start Redis, the gateway and workers on the bundled model (Ctrl-C stops them).
run: setup
	@$(MAKE) --no-print-directory all
	$(BIN)/lorq serve $(SERVE_ARGS)

clean:
	rm -rf build bin

-include $(shell find $(B) -name '*.d' 2>/dev/null)
