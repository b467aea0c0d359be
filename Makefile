# Two entry points do all set-up on a fresh machine (see README):
#   make demo   - venv + package, then `edgeyolo run` on the bundled demo (no GPU, no broker)
#   make test   - venv + test tools (+ mosquitto, chromium from apt when missing), lint, types, tests
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
	@# The status page test drives a real headless Chromium (Debian's, with its driver).
	@{ [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } || { \
	  echo "installing chromium and chromium-driver (Debian packages) for the status page test"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

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
	@# The Ultralytics goldens include frames of vtest.avi decoded by PyPI's OpenCV (its own
	@# FFmpeg); Debian's FFmpeg decodes that MS-MPEG4 a few pixels differently, so the golden's
	@# input check refuses them here. They run in `make test`.
	EDGEYOLO_TEST_GSTREAMER=1 $(SYS_VENV)/bin/pytest -m "gstreamer or not slow" \
	  --deselect tests/test_postprocess.py::test_matches_ultralytics_predict

bench: $(STAMP)
	$(BIN)/edgeyolo bench --cpu-stages --frames 100
	$(BIN)/edgeyolo bench --frames 60
	$(BIN)/edgeyolo bench --frames 60 --sequential

clean:
	rm -rf $(VENV) $(SYS_VENV) .pytest_cache .mypy_cache .ruff_cache

# --- Python 3.10 (harden, issue 10) ------------------------------------------------------
# The oldest Python we support (Jetson's) runs the service, MQTT, config and postprocess
# tests in its own venv. PY310: pyenv's 3.10.x, else python3.10 on PATH; neither: skipped
# with a message (the default interpreter's run stands alone).
PY310 ?= $(firstword $(wildcard $(shell pyenv root 2>/dev/null)/versions/3.10*/bin/python3.10) $(shell command -v python3.10 2>/dev/null))
PY310_VENV ?= .cache/py310
PY310_TESTS ?= tests/test_config.py tests/test_hardening_config.py tests/test_service.py \
  tests/test_mqtt_units.py tests/test_mqtt_sink.py tests/test_mqtt_service.py \
  tests/test_ha_discovery.py tests/test_hardening_mqtt.py tests/test_postprocess.py \
  tests/test_engine_onnxruntime.py

.PHONY: test-py310
test-py310: system-deps
	@if [ -z "$(PY310)" ]; then \
	  echo "test-py310: SKIPPED, no Python 3.10 here (pyenv versions, python3.10 on PATH)"; exit 0; fi; \
	set -e; \
	if [ ! -f $(PY310_VENV)/.installed ] || [ pyproject.toml -nt $(PY310_VENV)/.installed ] || [ Makefile -nt $(PY310_VENV)/.installed ]; then \
	  echo "+ $(PY310) -m venv $(PY310_VENV) (first run only)"; \
	  $(PY310) -m venv $(PY310_VENV); \
	  $(PY310_VENV)/bin/python -m pip install -q -e '.[opencv,test]'; \
	  touch $(PY310_VENV)/.installed; fi; \
	echo "+ $$($(PY310_VENV)/bin/python --version): $(PY310_TESTS)"; \
	$(PY310_VENV)/bin/python -m pytest -q -p no:cacheprovider $(PY310_TESTS)

# --- A real Home Assistant (harden, issue 10) --------------------------------------------
# Home Assistant 2025.4 on Python 3.13 in its own venv under .cache/ (first run: about 4
# minutes of pip), then tests/test_ha_real.py against it (mosquitto + hass + the demo).
# No Python 3.13: skipped with a message, a failure when CI=true.
PY313 ?= $(firstword $(wildcard $(shell pyenv root 2>/dev/null)/versions/3.13*/bin/python3.13) $(shell command -v python3.13 2>/dev/null))
HA_VENV ?= .cache/ha-venv
HA_REQUIREMENTS := homeassistant==2025.4.* home-assistant-frontend==20250411.0 paho-mqtt==2.1.0

.PHONY: test-ha
test-ha: $(TEST_STAMP) system-deps
	@if [ -z "$(PY313)" ]; then \
	  msg="test-ha: no Python 3.13 here (pyenv versions, python3.13 on PATH), so no Home Assistant"; \
	  if [ "$$CI" = true ]; then echo "$$msg: FAILED (CI=true)"; exit 1; fi; \
	  echo "$$msg: SKIPPED"; exit 0; fi; \
	set -ef; \
	if [ "$$(cat $(HA_VENV)/.installed 2>/dev/null)" != "$(HA_REQUIREMENTS)" ]; then \
	  echo "+ $(PY313) -m venv $(HA_VENV); pip install $(HA_REQUIREMENTS) (first run only)"; \
	  $(PY313) -m venv $(HA_VENV); \
	  $(HA_VENV)/bin/python -m pip install -q $(HA_REQUIREMENTS); \
	  echo "$(HA_REQUIREMENTS)" > $(HA_VENV)/.installed; fi; \
	EDGEYOLO_HASS=$(CURDIR)/$(HA_VENV)/bin/hass $(BIN)/pytest -q -p no:cacheprovider -m ha tests/test_ha_real.py tests/test_tracking_ha_real.py
