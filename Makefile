# The series' commands. `make run-all` and `make test` each set everything up on a fresh machine.
SHELL := /bin/bash
PY := .venv/bin/python
STAMP := .venv/.installed
DATA_DIR ?= ../shared/data
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))
export PYTHONHASHSEED := 0
export HF_HUB_DISABLE_PROGRESS_BARS := 1
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export OMP_WAIT_POLICY := PASSIVE

.PHONY: setup run-all test test-fast notebooks sync lint clean bench kaggle kaggle-push readme

setup: $(STAMP)

# torch first: the pinned CPU wheel; an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

# Runs every notebook in order on the embedded default; executed copies go to outputs/notebooks/.
run-all: $(STAMP)
	@mkdir -p outputs/notebooks
	@for nb in $(NOTEBOOKS); do \
	  echo "== $$nb"; start=$$(date +%s); \
	  (cd notebooks && ../$(PY) -m papermill --no-progress-bar -k python3 $$(basename $$nb) ../outputs/notebooks/$$(basename $$nb)) || exit 1; \
	  echo "   $$(( $$(date +%s) - start )) s"; \
	done

# Unit tests, real-data tests, then every committed notebook re-executed and compared with nbval.
test: $(STAMP)
	DATA_DIR=$(DATA_DIR) $(PY) -m pytest -q tests
	$(PY) -m pytest -q -p no:cacheprovider --nbval --nbval-sanitize-with notebooks/nbval_sanitize.cfg --nbval-current-env notebooks

test-fast: $(STAMP)
	DATA_DIR=$(DATA_DIR) $(PY) -m pytest -q -m "not slow" tests

# Re-execute the notebooks in place so that their stored outputs are current (commit the result).
notebooks: $(STAMP) sync
	@for nb in $(NOTEBOOKS); do echo "== $$nb"; \
	  (cd notebooks && ../$(PY) -m papermill --no-progress-bar -k python3 $$(basename $$nb) $$(basename $$nb)) || exit 1; \
	  $(PY) -m utils.notebooks strip $$nb; done
	$(MAKE) sync

sync: $(STAMP)
	$(PY) -m jupytext --sync notebooks/[0-9]*.py

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks notebooks/*.py
	$(PY) -m ruff format --check src tests benchmarks

bench: $(STAMP)
	$(PY) -m benchmarks.run

clean:
	rm -rf outputs cache dist data/prepared .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# Kaggle packaging (docs/KAGGLE.md): datasets for the package, the wheels and the data, one kernel folder per
# notebook, in dist/kaggle. The wheels come from PyPI (KAGGLE_ARGS=--no-wheels to skip); KAGGLE_USER names the owner.
KAGGLE_USER ?=
KAGGLE_ARGS ?=
kaggle: $(STAMP)
	PYTHONPATH=src $(PY) -m utils.kaggle build --out dist/kaggle $(if $(KAGGLE_USER),--user $(KAGGLE_USER)) \
	  $(if $(wildcard $(DATA_DIR)),--data-dir $(DATA_DIR)) $(KAGGLE_ARGS)

# Uploads dist/kaggle with the kaggle CLI (needs its credentials); `make kaggle-push KAGGLE_ARGS=--dry-run` prints the commands.
kaggle-push: $(STAMP)
	PYTHONPATH=src $(PY) -m utils.kaggle push --dist dist/kaggle $(KAGGLE_ARGS)

# The README's results section, generated from the notebooks' metrics.json and benchmarks/results.
readme: $(STAMP)
	$(PY) -m utils.report
