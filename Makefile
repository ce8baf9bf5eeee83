# Two entry points do all the set-up on a fresh machine: `make demo` and `make test`.
# Both depend on `setup`, which is idempotent (a second run takes seconds).
PYTHON_BOOT ?= python3.11
VENV        := .venv
PY          := $(VENV)/bin/python
STAMPS      := .stamps
SOURCES     := $(shell find asyncvla_ros -name '*.py' -not -path '*/__pycache__/*') msg/*.msg CMakeLists.txt \
               cmake/*.cmake setup.py setup.cfg package.xml launch/*.py config/*.yaml config/*.xml config/*.json config/robots/*.yaml \
               $(wildcard checkpoints/demo/*)
PYTEST_ARGS ?=

export AMENT_PREFIX_PATH := $(abspath $(VENV))
export MUJOCO_GL ?= egl

.PHONY: setup test test-fast lint demo bench clean
setup: $(STAMPS)/package

$(VENV)/bin/activate:
	$(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMPS)/requirements: requirements.txt | $(VENV)/bin/activate
	@mkdir -p $(STAMPS)
	@echo "setup: installing the pinned requirements into $(VENV) (requirements.txt)"
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $@

$(STAMPS)/package: $(STAMPS)/requirements $(SOURCES)
	@echo "setup: building the messages and installing asyncvla_ros into $(VENV)"
	$(PY) -m pip install --quiet --no-deps --no-build-isolation --force-reinstall .
	@touch $@
	@echo "setup: done ($(VENV); run 'source $(VENV)/bin/activate' to use it)"

test: setup lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not dds and not sim and not slow" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check asyncvla_ros test bench launch
	$(VENV)/bin/ruff format --check asyncvla_ros test bench launch

demo: setup
	$(PY) -m asyncvla_ros.tools.cli demo

bench: setup
	$(PY) bench/model_latency.py
	$(PY) bench/executor_jitter.py
	$(PY) bench/inference_gil.py
	$(PY) bench/sim_render.py

clean:
	rm -rf build $(STAMPS) *.egg-info
