PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install test test-slow test-gpu lint run docs bench bench-accuracy clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install torch==2.13.0
	$(PIP) install -e .[dev,docs,mcmc]
	touch $@

install: $(VENV)/.installed

# one worker per core (pytest-xdist; each worker runs torch on one thread)
test: install
	$(PY) -m pytest -q -n auto

test-slow: install
	$(PY) -m pytest -q -n auto -m slow

test-gpu: install
	$(PY) -m pytest -q -m gpu tests/test_gpu.py

lint: install
	$(VENV)/bin/ruff check quivers tests benchmarks

run: install
	$(VENV)/bin/quivers fit --config configs/eight_schools.yaml

docs: install
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) lightning_logs runs site

bench: install
	$(PIP) install -q -e .[bench]
	$(PY) benchmarks/speed.py
	$(PY) benchmarks/time_to_posterior.py
	$(PY) benchmarks/enum_speed.py

bench-accuracy: install
	$(PY) benchmarks/accuracy.py
