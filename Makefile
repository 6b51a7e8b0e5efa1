# The two commands a new user needs: `make demo` and `make test`. Both set up .venv first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# DDS discovery stays on this machine (Fast DDS multicasts on the network interface otherwise).
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_LOCALHOST_ONLY := 1
export YOLO_OFFLINE := 1
export MPLBACKEND := Agg
DATA ?=
PYTEST_ARGS ?=

.PHONY: setup test lint demo clean

setup:
	@scripts/setup.sh

lint: setup
	$(VENV)/bin/ruff check mex_fusion_ros test launch scripts setup.py

test: setup lint
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/mex-fusion demo --live $(if $(DATA),--data $(DATA),)

clean:
	rm -rf $(VENV) build install log .pytest_cache .ruff_cache
