# lrsl-rt: the README's two commands are `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
ART ?= artifacts/banking77
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test lint format bundle bench accuracy clean

install:
	@bash scripts/install.sh

## Command 1: train + export the default Banking77 bundle (reused when built) and predict a few queries.
demo: install
	@bash scripts/demo.sh

## Command 2: lint, format check and the whole test suite.
test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

lint:
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

## Full-quality Banking77 checkpoint and int8 bundle (about 45 minutes on 2 cores).
bundle: install
	$(PY) -m train --dataset banking77 --threads 2 --out $(ART)/checkpoint
	$(PY) -m export $(ART)/checkpoint $(ART)/bundle --precision int8 --force

bench: install
	$(PY) benchmarks/latency.py --bundle $(ART)/bundle --checkpoint $(ART)/checkpoint --threads 2 --out $(ART)/latency.json

clean:
	rm -rf artifacts .pytest_cache
