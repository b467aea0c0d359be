# Two entry points do all set-up on a fresh machine (see README):
#   make demo   - venv + package, then `edgeyolo run` on the bundled demo (no GPU, no broker)
#   make test   - venv + test tools (+ mosquitto from apt when missing), lint, types, tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test lint typecheck pytest system-deps bench clean

# Set-up output goes to stderr: `make demo | jq` must see only events on stdout.
$(STAMP): pyproject.toml
	@echo "+ creating $(VENV) and installing edgeyolo (first run only)" >&2
	@$(PYTHON) -m venv $(VENV) >&2
	@$(BIN)/python -m pip install -q --upgrade pip >&2
	@$(BIN)/python -m pip install -q -e . >&2
	@touch $@

$(TEST_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install -q -e '.[dev]'
	# TensorRT's type stubs, without TensorRT (see the script for why --no-deps and a repair)
	PYTHON=$(BIN)/python scripts/install-trt-stubs
	touch $@

demo: $(STAMP)
	@# stdout carries only events (JSON lines), so the command is echoed on stderr
	@echo "+ $(BIN)/edgeyolo run" >&2
	@$(BIN)/edgeyolo run

system-deps:
	@command -v mosquitto >/dev/null 2>&1 || command -v /usr/sbin/mosquitto >/dev/null 2>&1 || { \
	  echo "installing mosquitto (Debian package) for the MQTT tests"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq mosquitto >/dev/null; }

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

pytest: $(TEST_STAMP) system-deps
	$(BIN)/pytest

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/edgeyolo bench --cpu-stages --frames 100
	$(BIN)/edgeyolo bench --frames 60
	$(BIN)/edgeyolo bench --frames 60 --sequential

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
