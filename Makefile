# Two entry points do all set-up on a fresh machine (see README):
#   make demo   - venv + package, then `edgeyolo run` on the bundled demo (no GPU, no broker)
#   make test   - venv + test tools (+ mosquitto from apt when missing), lint, types, tests
# and one more that CI runs after `make test` (.ci/run):
#   make test-system-opencv - the system-OpenCV install path (docs/deploy.md): a venv with
#                 --system-site-packages on Debian's python3-opencv (GStreamer) and numpy < 2;
#                 runs the GStreamer tests for real, and the quick tests on numpy 1.x
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# The system interpreter, whose dist-packages has the distribution's cv2 and numpy 1.x.
SYSTEM_PYTHON ?= /usr/bin/python3
SYS_VENV ?= .venv-system-opencv
SYS_STAMP := $(SYS_VENV)/.installed

.PHONY: demo test lint typecheck pytest system-deps bench clean test-system-opencv

# Set-up output goes to stderr: `make demo | jq` must see only events on stdout.
$(STAMP): pyproject.toml
	@echo "+ creating $(VENV) and installing edgeyolo (first run only)" >&2
	@$(PYTHON) -m venv $(VENV) >&2
	@$(BIN)/python -m pip install -q --upgrade pip >&2
	@$(BIN)/python -m pip install -q -e '.[opencv]' >&2
	@touch $@

$(TEST_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install -q -e '.[dev]'
	# TensorRT's type stubs, without TensorRT (see the script for why --no-deps and a repair)
	PYTHON=$(BIN)/python scripts/install-trt-stubs
	touch $@

$(SYS_STAMP): pyproject.toml deploy/constraints-system-opencv.txt
	@$(SYSTEM_PYTHON) -c 'import cv2, numpy; print("system OpenCV", cv2.__version__, "numpy", numpy.__version__)' || { \
	  echo "$(SYSTEM_PYTHON) cannot import cv2: apt-get install python3-opencv python3-venv" \
	  "gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-libav (see .ci/run)"; exit 1; }
	$(SYSTEM_PYTHON) -m venv --system-site-packages $(SYS_VENV)
	$(SYS_VENV)/bin/python -m pip install -q --upgrade pip
	$(SYS_VENV)/bin/python -m pip install -q -c deploy/constraints-system-opencv.txt -e '.[test]'
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
	$(BIN)/ruff format --check src tests scripts

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

pytest: $(TEST_STAMP) system-deps
	$(BIN)/pytest

test: lint typecheck pytest

# GStreamer tests (all of them) and the quick tests, on the system OpenCV and numpy 1.x.
test-system-opencv: $(SYS_STAMP) system-deps
	EDGEYOLO_TEST_GSTREAMER=1 $(SYS_VENV)/bin/pytest -m "gstreamer or not slow"

bench: $(STAMP)
	$(BIN)/edgeyolo bench --cpu-stages --frames 100
	$(BIN)/edgeyolo bench --frames 60
	$(BIN)/edgeyolo bench --frames 60 --sequential

clean:
	rm -rf $(VENV) $(SYS_VENV) .pytest_cache .mypy_cache .ruff_cache
