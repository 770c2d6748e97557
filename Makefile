# yoloserve: see README.md. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
ORT_FLAVOR ?= cpu
# The CPU build takes ONNX Runtime 1.31.1, the latest release: as fast as
# 1.30.0 here, whose 2-thread session runs yolov8n about a tenth faster than
# 1.29.0's (docs/performance.md). The CUDA provider libraries of
# ORT_GPU_PACKAGE are built against 1.29.0 and load only beside a core
# library of that version.
ORT_GPU_PACKAGE ?= com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9
ORT_CPU_VERSION ?= 1.31.1
ORT_CUDA_VERSION ?= 1.29.0
ORT_VERSION ?= $(if $(filter cuda,$(ORT_FLAVOR)),$(ORT_CUDA_VERSION),$(ORT_CPU_VERSION))
ARCH := $(shell uname -m | sed -e 's/x86_64/x64/' -e 's/aarch64/arm64/')
ORT_DIR := lib/onnxruntime
ORT_CORE := $(ORT_DIR)/libonnxruntime.so.1
# Which version lib/onnxruntime holds: a build of another version (or
# flavor) fetches its library again.
ORT_STAMP := $(ORT_DIR)/.version-$(ORT_VERSION)
CACHE := .cache

.PHONY: all build test bench lint run clean model help ort fuzz soak race chaos

all: build

help:
	@echo "make build   fetch the ONNX Runtime library and build bin/api, bin/worker, bin/detect"
	@echo "make test    run the whole test suite (starts its own redis-server)"
	@echo "make bench   measure the floor, the detector stages and the service; writes bench/results.json"
	@echo "make run     set up and start the API and a worker (Ctrl-C stops both)"
	@echo "make lint    gofmt and go vet"
	@echo "make race    the test suite under the race detector, processes included"
	@echo "make chaos   kill and restart the processes at random under load (S=seconds, default 120)"
	@echo "make soak    N tasks (default 10000) through the service; nothing lost or left behind"
	@echo "make fuzz    the upload, decoder and parameter fuzzers, 60 s each"
	@echo "make model   export models/yolov8n.onnx with Ultralytics"
	@echo "make clean   remove build outputs"

build: ort
	CGO_ENABLED=0 $(GO) build -o bin/api ./cmd/api
	$(GO) build -o bin/worker ./cmd/worker
	$(GO) build -o bin/detect ./cmd/detect
	CGO_ENABLED=0 $(GO) build -o bin/devredis ./cmd/devredis

# The ONNX Runtime core library comes from the npm package onnxruntime-node,
# unpacked without running its install scripts. ORT_FLAVOR=cuda adds the
# CUDA provider libraries beside it. A version change removes the provider
# libraries with the old core library: they load only beside their own.
ort: $(ORT_STAMP) $(if $(filter cuda,$(ORT_FLAVOR)),$(ORT_DIR)/libonnxruntime_providers_cuda.so)

$(ORT_STAMP):
	@mkdir -p $(CACHE) $(ORT_DIR)
	rm -f $(ORT_DIR)/.version-* $(ORT_CORE) $(ORT_DIR)/libonnxruntime_providers_*.so
	cd $(CACHE) && npm pack --silent onnxruntime-node@$(ORT_VERSION) >/dev/null
	tar --no-same-owner -xzf $(CACHE)/onnxruntime-node-$(ORT_VERSION).tgz -C $(CACHE) package/bin/napi-v6/linux/$(ARCH)/libonnxruntime.so.1
	mv $(CACHE)/package/bin/napi-v6/linux/$(ARCH)/libonnxruntime.so.1 $(ORT_CORE)
	rm -rf $(CACHE)/package $(CACHE)/onnxruntime-node-$(ORT_VERSION).tgz
	touch $@
	@echo "ONNX Runtime $(ORT_VERSION) in $(ORT_DIR)"

$(ORT_DIR)/libonnxruntime_providers_cuda.so: $(ORT_STAMP)
	@mkdir -p $(CACHE) $(ORT_DIR)
	cd $(CACHE) && npm pack --silent $(ORT_GPU_PACKAGE) >/dev/null
	tar --no-same-owner -xzf $(CACHE)/$$(echo $(ORT_GPU_PACKAGE) | sed 's/@/-/').tgz -C $(CACHE) \
		package/Plugins/Linux/x64/libonnxruntime_providers_cuda.so package/Plugins/Linux/x64/libonnxruntime_providers_shared.so
	mv $(CACHE)/package/Plugins/Linux/x64/libonnxruntime_providers_cuda.so $(CACHE)/package/Plugins/Linux/x64/libonnxruntime_providers_shared.so $(ORT_DIR)/
	rm -rf $(CACHE)/package $(CACHE)/*.tgz
	touch $@

test: ort
	@scripts/test-deps.sh
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...

# The suite under the race detector, the API and worker processes the
# end-to-end tests start included (they are built with GOFLAGS too); their
# reports go to files, since a test may not read a process's output.
race: ort
	@scripts/test-deps.sh
	@d=$$(mktemp -d); \
	GOFLAGS=-race GORACE="log_path=$$d/race" $(GO) test -count=1 -timeout 40m ./...; rc=$$?; \
	if ls $$d/race.* >/dev/null 2>&1; then cat $$d/race.*; rc=1; fi; rm -rf $$d; exit $$rc

bench: build
	$(GO) run ./cmd/bench -out bench/results.json $(BENCH_FLAGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# N tasks (default 10,000) through the API, Redis and a worker; nothing may
# be lost or left behind. -count=1: a soak that passed once is not a result
# to reuse from Go's test cache.
soak: ort
	@scripts/test-deps.sh
	YOLOSERVE_SOAK=$${N:-10000} $(GO) test ./internal/e2e -run TestSoak -v -count=1 -timeout 60m

# Processes killed and restarted at random under load for S seconds
# (default 120; half with uploads on disk, half in Redis); every accepted
# task must end SUCCESS.
chaos: ort
	@scripts/test-deps.sh
	YOLOSERVE_CHAOS=$${S:-120} $(GO) test ./internal/e2e -run TestChaos -v -count=1 -timeout 60m

fuzz:
	$(GO) test ./internal/http -run '^$$' -fuzz FuzzUpload -fuzztime 60s
	$(GO) test ./internal/decode -run '^$$' -fuzz FuzzInspect -fuzztime 60s
	$(GO) test ./internal/decode -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime 60s
	$(GO) test ./internal/detect -run '^$$' -fuzz FuzzParseParams -fuzztime 60s

run: build
	@scripts/run.sh

model: models/yolov8n.onnx

models/yolov8n.onnx:
	@scripts/export-model.sh

clean:
	rm -rf bin lib $(CACHE) bench/*.json bench/*.log
