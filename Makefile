# The README's contract: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow bench bench-simulators schema docs mutate clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# CPU build first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/recloop run scenarios/quickstart.yaml --out runs/quickstart
	@echo
	@echo "Next: open runs/quickstart/report.html in a browser, then compare cadences in a minute:"
	@echo "  . $(BIN)/activate && recloop run cadence-sweep --quick --workers 2"

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -n 2

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

bench: $(STAMP)
	$(BIN)/python bench/throughput.py --retrain 1d 1h --all-layers 1d 1h --naive-seconds 60
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/catalog.py --users 50000 --items 5000 20000 100000 1000000
	$(BIN)/python bench/grid.py --users 10000 100000 --days 1 7 --max-user-days 100000

# T-RECS pins pandas 1.0.5 and RecSim needs gym: they get their own environment, with the
# dependencies they import at versions that still install (T-RECS without its pins).
BENCH_VENV := .bench-venv
$(BENCH_VENV)/.installed:
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --no-deps trecs==0.2.1
	$(BENCH_VENV)/bin/pip install --quiet "numpy<2" pandas networkx scipy matplotlib tqdm \
		"lenskit>=0.11.1,<0.15" recsim-no-tf==0.2.3 six scikit-learn
	touch $@

bench-simulators: $(STAMP) $(BENCH_VENV)/.installed
	$(BIN)/python bench/simulators.py --other-python $(BENCH_VENV)/bin/python

schema: $(STAMP)
	$(BIN)/recloop schema > scenarios/scenario.schema.json

# The documentation site: the scenario reference regenerated from the schema, then every page
# built with --strict (a broken link or anchor fails). `make test` does not need mkdocs.
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(BIN)/python docs/gen_reference.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	@echo "built: site/index.html"

# Mutation testing (bench/mutation.py): mutmut over the modules that decide the numbers users act
# on, each with the tests that cover it, one mutant at a time (hours for all ~6,200 mutants; one
# module takes 1-30 min). Scores and every surviving mutant: bench/results/mutation.md. One module:
# `make mutate MODULES=sim/serving/eventlog.py`. `make test` does not need mutmut.
MUTATE_STAMP := $(VENV)/.mutate-installed
$(MUTATE_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[mutate]'
	touch $(MUTATE_STAMP)

mutate: $(MUTATE_STAMP)
	$(BIN)/python bench/mutation.py $(MODULES)

clean:
	rm -rf $(VENV) runs build site *.egg-info
