# fiberprep: two commands on a fresh machine.
#   make run    set up .venv, run the workflow on the bundled demo images
#   make test   set up .venv, run the tests
# Other targets: bench, bench-zones, bench-bands, bench-defects, bench-cluster, bench-labels,
# bench-independent, bench-scale, test-slurm, lint, demo.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fiberprep-installed
CORES ?= all
RESULTS ?= results

.PHONY: run test test-slurm bench bench-zones bench-bands bench-defects bench-cluster bench-labels bench-independent bench-scale lint demo setup

setup: $(STAMP)

# (Re)install the package and its pinned dependencies when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --config results_dir=$(RESULTS)
	@echo ""
	@echo "Datasets:       $(RESULTS)/datasets/ (pixel_level, region_level, image_level)"
	@echo "Defect library: $(RESULTS)/defect_library/index.parquet and patches/"
	@echo "QC report:      $(RESULTS)/qc/report.html"

test: $(STAMP)
	$(BIN)/python -m pytest

# The workflow on a throwaway single-node SLURM (root; skipped when SLURM is unavailable).
test-slurm: $(STAMP)
	$(BIN)/python -m pytest -m slurm -rs

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_workflow.py

# bench-zones, bench-bands (plain fibers with an epoxy band), bench-defects, bench-cluster
bench-zones bench-bands bench-defects bench-cluster: bench-%: $(STAMP)
	$(BIN)/python benchmarks/bench_$*.py

# The published datasets of a workflow run scored against the generator's exact truth.
bench-labels: $(STAMP)
	$(BIN)/python benchmarks/bench_labels.py

# The same scoring on images of a renderer written apart from fiberprep.synth.
bench-independent: $(STAMP)
	$(BIN)/python benchmarks/bench_labels.py --preset independent --seed 101

# Workflow scale: dry-run time/memory at 1k-100k images, overhead, incremental runs (long).
bench-scale: $(STAMP)
	$(BIN)/python benchmarks/bench_scale.py

lint: $(STAMP)
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check .

# Regenerate the bundled demo input (committed; a first run needs nothing else).
demo: $(STAMP)
	rm -rf resources/demo
	$(BIN)/python -m fiberprep.synth --out resources/demo --n 20 --seed 7 --preset demo
