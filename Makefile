# One command each: `make demo` runs the main job, `make test` runs lint, types and the whole test suite.
# Both create the virtual environment in .venv if it is missing; each installs only what it needs:
# the demo the `lab` and `report` extras (matplotlib, scikit-learn), the tests the `dev` extra
# (Lightning, transformers, playwright... about 2 GB).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck pytest bench clean

$(BIN)/python:
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first, pinned below 2.14 so pip takes the CPU wheel on this machine's disk
	$(BIN)/pip install -q 'torch>=2.4,<2.14'

# what `gradguard demo` imports: the lab (scikit-learn's digits) and the report (matplotlib)
$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[lab,report]'
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	# tests/keras: Keras 3 with the CPU builds of TensorFlow and JAX (about 30 s of pip)
	$(BIN)/pip install -q -e '.[keras-ci]'
	touch $@

# what .ci/run builds first: the dev environment
$(BIN)/gradguard: $(VENV)/.dev-installed

demo: $(VENV)/.demo-installed
	$(BIN)/gradguard demo

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy

# pytest exits 5 when it collected no test: treat that as a failure, not as "nothing to do"
pytest: $(VENV)/.dev-installed
	$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

test: lint typecheck pytest

# every benchmark behind docs/benchmarks.md, one after the other (about 10 minutes on 2 cores);
# run it on a quiet machine
bench: $(VENV)/.dev-installed
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/overhead.py --json bench-overhead.json
	$(BIN)/python benchmarks/clip.py
	$(BIN)/python benchmarks/check.py
	$(BIN)/python benchmarks/demo.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache gradguard-demo
