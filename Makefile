# One command per stage; each creates or reuses .venv and installs what it needs (idempotent: a stamp per extra set).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check

export BENTOML_DO_NOT_TRACK := true

# `make train` repeats the shipped model's training runs, as its card lists them (models/mnist_cnn.json,
# "reproduce"); TRAIN_ARGS="..." trains one run of your own instead (the reference recipe: `--steps 20000`).
TRAIN_ARGS ?=
CARD ?= models/mnist_cnn.json
EXPORT_ARGS ?= --checkpoint runs/printed-ft/checkpoint.pt --out models/mnist_cnn.onnx --model-version 1.4.0 --int8 --fp16
MODEL ?= models/mnist_cnn.onnx
PYTEST_ARGS ?=
# Test processes (pytest-xdist; 0: one process). Each test module stays in one process (--dist loadfile), so that
# its server or trained model is made once.
PYTEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -p no:locust -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

PORT ?= 3000


.PHONY: help serve bench data install install-wheelhouse wheelhouse gpu-check install-train install-dev train export evaluate test test-fast lint format clean \
	bento bento-gpu container container-gpu base-image container-check container-tools bench-container loadtest bench-model bench-photos bench-plain bench-v2 corruptions bench-unsure bench-scaling ops-tools cluster cluster-stop rollout fuzz browser soak coverage

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 16

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# pip itself, pinned: the one Python bundles (23.2 with 3.11.7) matched wheel tags three times slower (docs/
# benchmarks.md, "Measured by hand"). Not for `make install WHEELHOUSE=`: no index there, and the bundled pip works.
PIP_VERSION := 26.3
$(VENV)/.pip: | $(VENV)/bin/python
	$(PIP) pip==$(PIP_VERSION)
	@touch $@

$(VENV)/.installed-base: pyproject.toml | $(VENV)/.pip
	$(PIP) -e .
	@touch $@

$(VENV)/.installed-train: pyproject.toml | $(VENV)/.pip
	$(PIP) -e '.[train]'
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(VENV)/.pip
	$(PIP) -e '.[train,dev,loadtest]'
	@touch $@

$(VENV)/.installed-bench: $(VENV)/.installed-dev
	$(PIP) -e '.[train,dev,loadtest,bench]'
	@touch $@

$(VENV)/.installed-loadtest: pyproject.toml | $(VENV)/.pip
	$(PIP) -e '.[dev,loadtest]'
	@touch $@

serve: install  ## install and serve the model (DIGITSERVE_* variables, PORT=3000) on http://localhost:$(PORT)
	$(BIN)/bentoml serve service.app:DigitService --port $(PORT)

install: $(if $(WHEELHOUSE),install-wheelhouse,$(VENV)/.installed-base)  ## install what serving needs (no torch); WHEELHOUSE=dir: from a wheelhouse, no index

# make install WHEELHOUSE=wheelhouse: the packages `make wheelhouse` fetched (its requirements.txt: CPU or GPU), then
# this project in place; no package index is asked.
install-wheelhouse: | $(VENV)/bin/python
	$(PIP) --no-index --find-links $(WHEELHOUSE) -r $(WHEELHOUSE)/requirements.txt
	$(PIP) --no-index --find-links $(WHEELHOUSE) --no-deps -e .
	@touch $(VENV)/.installed-base

FLAVOUR ?= cpu
WHEEL_ARGS ?=
wheelhouse: $(VENV)/.pip  ## every wheel serving needs into wheelhouse/, and a lock (FLAVOUR=cpu|gpu|gpu-no-cuda, WHEEL_ARGS=...)
	$(BIN)/python deploy/wheelhouse.py --flavour $(FLAVOUR) $(WHEEL_ARGS)

GPU_ARGS ?=
gpu-check: install  ## prove and measure the CUDA path on a GPU host (docs/gpu.md); elsewhere a one-line skip
	$(BIN)/python gpu/check.py $(GPU_ARGS)
install-train: $(VENV)/.installed-train  ## install training and export (torch 2.13 CPU)
install-dev: $(VENV)/.installed-dev  ## install everything the tests need

data: install-train  ## download and verify the four MNIST files into data/mnist (or $$MNIST_DIR)
	$(BIN)/python -c "import training.data as d; [d.load_file(k) for k in d.FILES]; print('MNIST ok in', d.resolve_data_dir())"

train: install-train install-fonts  ## repeat the shipped model's training runs (its card's); TRAIN_ARGS=... for a run of your own
	$(if $(strip $(TRAIN_ARGS)),$(BIN)/python -m training train $(TRAIN_ARGS),$(BIN)/python -m training reproduce $(CARD))

export: install-train  ## export the shipped model's last run to models/mnist_cnn.onnx + card, int8, fp16, verified
	$(BIN)/python -m training export $(EXPORT_ARGS)

evaluate: install-train  ## accuracy of MODEL on the MNIST test set through ONNX Runtime
	$(BIN)/python -m training evaluate $(MODEL)

corruptions: install-train  ## MODEL under the 15 MNIST-C corruptions (vs BASELINE=old.onnx): its card, README, docs/training
	$(BIN)/python -m training evaluate $(MODEL) --corruptions --plots docs/training --record README.md \
		$(if $(BASELINE),--baseline $(BASELINE))

bench-unsure: install-dev  ## what min_confidence refuses: non-digit images vs MNIST test digits (README table)
	$(BIN)/python accuracy/bench_unsure.py

bench: $(VENV)/.installed-bench  ## HTTP vs FastAPI and LitServe (needs wrk), then bench-photos; docs/benchmarks.md
	@command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk"; exit 1; }
	$(BIN)/python benchmarks/bench_http.py $(BENCH_ARGS)
	$(BIN)/python accuracy/bench_photos.py

# MLServer and perf_analyzer get an environment of their own: MLServer pins what serving pins otherwise (uvloop
# < 0.22), and perf_analyzer comes out of the tritonclient 2.40.0 wheel with a CUDA runtime library beside it.
BENCH_V2 := .venv-bench-v2
$(BENCH_V2)/.installed: requirements/bench-v2.txt
	$(PYTHON) -m venv $(BENCH_V2)
	$(BENCH_V2)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements/bench-v2.txt
	$(BENCH_V2)/bin/python -m pip download --quiet --disable-pip-version-check --no-deps tritonclient==2.40.0 \
		-d $(BENCH_V2)/wheels
	$(BENCH_V2)/bin/python -c "import zipfile, glob; \
		wheel = zipfile.ZipFile(glob.glob('$(BENCH_V2)/wheels/tritonclient-2.40.0-*.whl')[0]); \
		open('$(BENCH_V2)/bin/perf_analyzer', 'wb').write(wheel.read('tritonclient-2.40.0.data/data/bin/perf_analyzer'))"
	chmod +x $(BENCH_V2)/bin/perf_analyzer
	@touch $@

bench-v2: $(VENV)/.installed-bench $(BENCH_V2)/.installed  ## V2 over HTTP and gRPC: perf_analyzer, and against MLServer (needs wrk, h2load, libb64-0d)
	@command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk"; exit 1; }
	@command -v h2load >/dev/null || { echo "h2load not found: apt-get install nghttp2-client"; exit 1; }
	@/sbin/ldconfig -p | grep -q libb64.so.0d || { echo "perf_analyzer needs libb64: apt-get install libb64-0d"; exit 1; }
	$(BIN)/python benchmarks/bench_v2.py $(BENCH_ARGS)

bench-photos: install-dev  ## phone photos: accuracy per condition, latency, memory, stalling; writes docs/benchmarks.md
	$(BIN)/python accuracy/bench_photos.py $(PHOTO_ARGS)

READ_ARGS ?=
bench-read: install-dev  ## POST /read on written numbers (photos, canvases, touching), beside Tesseract 5; docs/benchmarks.md
	$(call debian,tesseract,tesseract-ocr,the Tesseract columns stay empty)
	$(BIN)/python accuracy/bench_read.py $(READ_ARGS)

bench-plain: install-dev install-fonts  ## UCI digits cut close, an 8x8 MNIST control, printed digits per font; docs/benchmarks.md
	$(BIN)/python accuracy/bench_plain.py $(PLAIN_ARGS)

# make loadtest [HOST=http://...] [USERS=20] [DURATION=60s] [WORKERS=0] [TAGS="classify pixels"] [SCENARIO=mix|overload]
HOST ?=
USERS ?= 20
DURATION ?= 60s
WORKERS ?= 0
TAGS ?=
SCENARIO ?= mix
loadtest: $(VENV)/.installed-loadtest  ## locust headless (starts the service unless HOST=...); reports/ and SLO check
	$(BIN)/python loadtests/run.py --scenario $(SCENARIO) --users $(USERS) --duration $(DURATION) \
		--workers $(WORKERS) $(if $(HOST),--host $(HOST)) $(if $(TAGS),--tags $(TAGS))

bento: install  ## build the CPU Bento (service code + model, pinned packages) into the BentoML store
	$(BIN)/bentoml build -f bentofile.yaml

bento-gpu: install  ## build the GPU Bento (onnxruntime-gpu with CUDA 13 and cuDNN wheels)
	$(BIN)/bentoml build -f bentofile.gpu.yaml

# Images with podman or Docker, whichever answers (deploy/container/: the Containerfile, the host settings podman
# gets through CONTAINERS_CONF, the build and the check). No registry needed: the base image is made from Debian's
# packages where none answers, and the wheels come from this machine's pip.
container: install container-tools  ## the CPU image digitserve:latest (SAVE=1: also an OCI archive in runs/container/)
	$(BIN)/python -m deploy.container.build --flavour cpu $(if $(SAVE),--save)

container-gpu: install container-tools  ## the GPU image digitserve-gpu:latest (onnxruntime-gpu, CUDA 13 and cuDNN wheels)
	$(BIN)/python -m deploy.container.build --flavour gpu $(if $(SAVE),--save)

base-image: install container-tools  ## the images' base: python:3.11-slim from a registry, else made by debootstrap (once)
	$(BIN)/python -m deploy.container.build --base-only

container-check: install-dev container-tools  ## build and run the CPU image and check what it serves (GPU=1: the GPU image too)
	$(BIN)/python -m deploy.container.check $(if $(GPU),--gpu)

bench-container: install-dev container-tools  ## the CPU image vs the same service outside it: start, requests/s (docs/containers.md)
	$(call debian,wrk,wrk,bench-container needs it)
	$(BIN)/python benchmarks/bench_container.py $(CONTAINER_ARGS)

container-tools:  ## Debian's podman, runc, catatonit (a pod's pause process) and debootstrap (as root or with sudo)
	$(call debian,podman runc catatonit debootstrap,podman runc catatonit debootstrap,container-check will skip)

# Replicas behind HAProxy, Prometheus scraping them (deploy/local/); runs/cluster/ holds their configs and logs.
REPLICAS ?= 2
CLUSTER_PORT ?= 8080
CLUSTER_GRPC_PORT ?= 8081
cluster: $(VENV)/.installed-loadtest ops-tools  ## REPLICAS replicas behind HAProxy on CLUSTER_PORT (gRPC: CLUSTER_GRPC_PORT), Prometheus on 9090
	$(BIN)/python deploy/local/cluster.py start --replicas $(REPLICAS) --port $(CLUSTER_PORT) --grpc-port $(CLUSTER_GRPC_PORT)

cluster-stop:  ## stop what make cluster started
	$(BIN)/python deploy/local/cluster.py stop

rollout: $(VENV)/.installed-loadtest ops-tools  ## restart each replica under locust load, then kill one: failures, gaps (docs/scaling.md)
	$(BIN)/python deploy/local/rollout.py --replicas $(REPLICAS) --record

bench-scaling: $(VENV)/.installed-loadtest ops-tools  ## one replica vs HAProxy + 1 vs HAProxy + 2, with wrk (docs/scaling.md)
	@command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk"; exit 1; }
	$(BIN)/python deploy/local/bench_scaling.py $(BENCH_ARGS)

bench-model: install-dev  ## in-process images/s of each model variant and provider by batch size; start-up time
	$(BIN)/python benchmarks/bench_model.py $(BENCH_ARGS)

FUZZ_EXAMPLES ?= 20000
fuzz: install-dev  ## property-based fuzzing of decoding, preprocessing and V2 request parsing (FUZZ_EXAMPLES=20000 per property)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_MAX_PIXELS=25000000 $(BIN)/python -m pytest -p no:locust -q \
		tests/unit/test_fuzz.py tests/unit/test_open_inference_parsing.py --hypothesis-show-statistics

SOAK_ARGS ?=
soak: $(VENV)/.installed-loadtest  ## steady load below capacity for 10 min; fails on memory growth or any error (soak.py)
	$(BIN)/python loadtests/soak.py $(SOAK_ARGS)

lint: install-dev  ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# $(call debian,COMMANDS,PACKAGES,WITHOUT): install Debian's PACKAGES unless every one of COMMANDS is on PATH, as root
# or with password-less sudo; otherwise say what WITHOUT them means.
define debian
	@if $(foreach c,$(1),command -v $(c) >/dev/null &&) true; then :; \
	elif [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $(2) >/dev/null; \
	elif command -v apt-get >/dev/null && sudo -n true 2>/dev/null; then \
		sudo apt-get update -qq && sudo apt-get install -y -qq --no-install-recommends $(2) >/dev/null; \
	else echo "$(1) missing and not root: $(3) (sudo apt-get install $(2))"; fi
endef

browser:  ## Debian's chromium + chromium-driver for the browser tests (installs them as root or with sudo)
	$(call debian,chromium chromedriver,chromium chromium-driver,the browser tests will skip)

# Printed digits: the test families (DejaVu, Liberation, FreeFont, Lato, Cantarell: make bench-plain) and the fonts
# training renders them in (--printed: the others; training/printed.py keeps the two apart).
FONTS := fonts-dejavu-core fonts-liberation fonts-freefont-ttf fonts-lato fonts-cantarell fonts-roboto-unhinted \
	fonts-open-sans fonts-crosextra-carlito fonts-crosextra-caladea fonts-urw-base35 fonts-noto-core \
	fonts-linuxlibertine fonts-inconsolata fonts-firacode
install-fonts:  ## Debian's fonts for printed digits: training's and make bench-plain's (as root or with sudo)
	@if dpkg -s $(FONTS) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $(FONTS) >/dev/null; \
	elif command -v apt-get >/dev/null && sudo -n true 2>/dev/null; then \
		sudo apt-get update -qq && sudo apt-get install -y -qq --no-install-recommends $(FONTS) >/dev/null; \
	else echo "fonts missing and not root: printed digits use the fonts there are (sudo apt-get install $(FONTS))"; fi

ops-tools:  ## Debian's haproxy and prometheus (promtool) for make cluster and the rule tests (as root or with sudo)
	$(call debian,haproxy promtool,haproxy prometheus,their tests will skip)

# The tests that compare latencies (marker `timing`) run alone, after the others: a test beside them would skew them.
# The second run collects only the files the first one left tests in (SECOND_PHASE, written by tests/conftest.py).
# The first prints its ten slowest steps: where the suite's time goes, in every CI log.
SECOND_PHASE := .pytest_cache/second-phase-files
# $(call test_phases,FIRST,SECOND): both runs, FIRST and SECOND their extra pytest options.
define test_phases
	$(PYTEST) -m "not timing" --durations=10 --deselected-files=$(SECOND_PHASE) $(1) $(PYTEST_ARGS)
	files=$$(cat $(SECOND_PHASE)); [ -z "$$files" ] || \
		$(BIN)/python -m pytest -p no:locust -m timing $$files $(2) $(PYTEST_ARGS)
endef
# Then the CPU image is built, run and checked where podman or Docker can run it (else one line says why not).
test: lint browser ops-tools install-fonts container-tools  ## lint, the whole test suite (PYTEST_ARGS=..., PYTEST_WORKERS=2), container-check
	$(call test_phases,,)
	$(BIN)/python -m deploy.container.check

test-fast: install-dev  ## the tests not marked slow: no server started, about 35 s
	$(PYTEST) -m "not slow and not timing" $(PYTEST_ARGS)

COVERAGE := --cov=service --cov=training --cov-report=term
coverage: install-dev  ## the whole test suite with line coverage of service/ and training/ (pytest-cov)
	$(call test_phases,$(COVERAGE),$(COVERAGE) --cov-append)

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:  ## remove the virtual environment, caches and training runs (not data/ or models/)
	rm -rf $(VENV) runs .pytest_cache .ruff_cache *.egg-info
