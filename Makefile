# Every target creates .venv itself when it is missing (fresh clone, nothing preinstalled).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# A second environment with ipykernel 6.29, to test the engine design on both kernel lines.
VENV6   := .venv-ipykernel6
STAMP6  := $(VENV6)/.installed
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: venv demo test test-fast typecheck lab bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

$(STAMP6): pyproject.toml $(STAMP)
	test -x $(VENV6)/bin/python || $(PY) -m venv $(VENV6)
	$(VENV6)/bin/python -m pip install -q --upgrade pip
	$(VENV6)/bin/python -m pip install -q -e . 'ipykernel==6.29.*'
	$(VENV6)/bin/python -m ipykernel install --prefix $(abspath $(VENV)) --name goenhance-ipykernel6 --display-name 'Python 3 (ipykernel 6.29)' > /dev/null
	touch $(STAMP6)

venv: $(STAMP)

## demo: execute notebooks/01-quickstart.ipynb headless against the simulator; write and list results
demo: $(STAMP)
	$(BIN)/python -m goenhance_nb._demo --out demo-output

## typecheck: mypy over the package (DECISIONS 29; settings in pyproject.toml [tool.mypy])
typecheck: $(STAMP)
	$(BIN)/python -m mypy

## test: the type check, then every test, including the real-kernel and real-browser suites
test: $(STAMP) $(STAMP6) typecheck
	$(BIN)/python -m playwright --version > /dev/null
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## test-fast: the type check, then every test but the browser suite
test-fast: $(STAMP) typecheck
	$(BIN)/python -m pytest -m 'not browser' $(PYTEST_ARGS)

## bench: every benchmark (issue 15, P1-P8) against its baseline; writes BENCHMARKS.md (< 10 min)
##        BENCH_ARGS="--only P1,P3" or BENCH_ARGS="--note '...'" (a line in the machine block)
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

## lab: JupyterLab on the notebooks (simulator when no GOENHANCE_API_KEY)
lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf $(VENV) $(VENV6) demo-output artifacts .pytest_cache .mypy_cache
