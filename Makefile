# lrsl-rt: the README's two commands are `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# DATASET: a named data set of train/data.py (banking77, hwu64); ART: where its checkpoint and bundles go.
DATASET ?= banking77
ART ?= artifacts/$(DATASET)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test lint format bundle bundle-banking77 bundle-hwu64 bench accuracy results table levers clean
RECORD := $(PY) -m benchmarks.run_record

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

## Full-quality checkpoint and int8 bundle of $(DATASET), same defaults for every data set
## (`make bundle DATASET=hwu64`); each step's command and machine are recorded beside its output
## (CKPT.run.json, BUNDLE.run.json) for `make results`.
bundle: install
	$(RECORD) --out $(ART)/checkpoint.run.json -- $(PY) -m train --dataset $(DATASET) --threads 2 --out $(ART)/checkpoint
	$(RECORD) --out $(ART)/bundle.run.json -- $(PY) -m export $(ART)/checkpoint $(ART)/bundle --precision int8 --force

bundle-banking77 bundle-hwu64:
	$(MAKE) bundle DATASET=$(@:bundle-%=%) ART=artifacts/$(@:bundle-%=%)

$(ART)/checkpoint/lrsl.json:
	@echo "no training checkpoint at $(ART)/checkpoint: run \`make bundle\` first" >&2; exit 1

## The fp32 bundle is the second row of the benchmarks (built from the same checkpoint when missing).
$(ART)/bundle-fp32/manifest.json: $(ART)/checkpoint/lrsl.json
	$(RECORD) --out $(ART)/bundle-fp32.run.json -- $(PY) -m export $(ART)/checkpoint $(ART)/bundle-fp32 --precision fp32 --force

## Latency/throughput and accuracy tables (needs `make bundle` first); `make results` turns them into docs/results/.
bench: install $(ART)/bundle-fp32/manifest.json
	$(PY) -m benchmarks.latency --bundle $(ART)/bundle --bundle-fp32 $(ART)/bundle-fp32 \
		--checkpoint $(ART)/checkpoint --threads 2 --out $(ART)/latency.json

accuracy: install $(ART)/bundle-fp32/manifest.json
	$(PY) -m benchmarks.accuracy --checkpoint $(ART)/checkpoint --bundle $(ART)/bundle \
		--bundle-fp32 $(ART)/bundle-fp32 --threads 2 --out $(ART)/accuracy.json

## docs/results/: one dated page per result JSON under artifacts/ (training, export, bench, accuracy) and the index.
results: install
	$(PY) -m benchmarks.results_doc artifacts --out docs/results

## Multi-data-set accuracy table from each built data set's metrics (artifacts/datasets.md + .json,
## with its run record: `make results` pages it).
table:
	$(PY) -m benchmarks.datasets_table --artifacts artifacts --out artifacts/datasets

## Levers (label representations, hardness gates, MLP reranker) on $(DATASET)'s checkpoint, no retraining.
levers: $(ART)/checkpoint/lrsl.json
	$(PY) -m benchmarks.levers --checkpoint $(ART)/checkpoint --threads 2 --out $(ART)/levers

clean:
	rm -rf artifacts .pytest_cache
