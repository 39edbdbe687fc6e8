# clipkit — `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CLIPKIT := $(VENV)/bin/clipkit
STAMP := $(VENV)/.clipkit-installed
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint bench mutants clean help

help:
	@echo "make demo       set up .venv and run clipkit on the example scenes with the bundled model"
	@echo "make test       set up .venv (with test extras) and run the whole test suite"
	@echo "make test-fast  the suite without tests marked slow"
	@echo "make lint       ruff"
	@echo "make bench      the benchmark scripts (minutes; figures go to bench/README.md by hand)"
	@echo "make mutants    mutation score of the maths modules (mutmut, in /tmp/mut; not part of make test)"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(CLIPKIT) classify examples/scenes/images --labels-file examples/labels.txt --top-k 3 --format table

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check clipkit tests bench

bench: $(STAMP)
	$(PY) bench/classify_throughput.py

# mutmut rewrites files: bench/golden/mutants.py works on copies of the tree under $(MUTANTS_WORK)
MUTANTS_WORK ?= /tmp/mut
mutants: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[mutation]'
	nice -n 15 $(PY) bench/golden/mutants.py --work $(MUTANTS_WORK)

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
