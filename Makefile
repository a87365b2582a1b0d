# Every target works from a fresh clone: the virtual environment is made on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first: left to itself pip would fetch a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mridomain demo --out demo_out

test: $(STAMP) lint
	$(PY) -m pytest -q

# ruff (pyflakes, pycodestyle, bugbear) and the import contract (layers, no cycles): pyproject.toml
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/lint-imports

# Everything but the end-to-end tests marked slow (CI runs the whole `make test`).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) bench/index_bench.py
	$(PY) bench/sim_bench.py
	$(PY) bench/train_bench.py
	$(PY) bench/predict_bench.py
	$(PY) bench/shift_bench.py
	$(PY) bench/synth_bench.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
