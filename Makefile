# riskstrat: `make demo` runs the whole product on synthetic data; `make test` runs the tests.
# Both create the environment from the lock file first. `make help` lists every target.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
UV_VERSION := 0.13.9
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.riskstrat-installed

export RISKSTRAT_HOME ?= $(CURDIR)/.riskstrat
export UV_PYTHON_DOWNLOADS := never
# Where validate, features, predict, score and cohorts run in the demos: duckdb (embedded) or
# spark (Apache Spark in local mode; make demo ENGINE=spark). Training stays on one machine.
ENGINE ?= duckdb
DEMO_PATIENTS ?= 20000
DEMO_SEED ?= 1
DEMO_EXTRACT := $(RISKSTRAT_HOME)/demo/extract-$(DEMO_PATIENTS)-seed$(DEMO_SEED)
# A second area for external validation and local recalibration (another seed, half the size).
DEMO_OTHER := $(RISKSTRAT_HOME)/demo/other-area-$(DEMO_PATIENTS)-seed$(DEMO_SEED)
DEMO_KEYS := $(RISKSTRAT_HOME)/demo/keys
# demo-omop keeps its own home: its registry and store hold a pseudonymous run.
OMOP_HOME := $(RISKSTRAT_HOME)/omop-demo
OMOP_CDM := $(OMOP_HOME)/cdm-$(DEMO_PATIENTS)-seed$(DEMO_SEED)
OMOP_EXTRACT := $(OMOP_HOME)/extract-$(DEMO_PATIENTS)-seed$(DEMO_SEED)
# Spark reads a CDM as a folder of tables (CSV here); DuckDB reads the CDM's DuckDB file.
ifeq ($(ENGINE),spark)
OMOP_CDM := $(OMOP_HOME)/cdm-csv-$(DEMO_PATIENTS)-seed$(DEMO_SEED)
OMOP_LAYOUT := csv
OMOP_SOURCE := $(OMOP_CDM)/cdm
else
OMOP_LAYOUT := duckdb
OMOP_SOURCE := $(OMOP_CDM)/cdm.duckdb
endif

.PHONY: help install demo demo-omop test test-fast browser bench lint format docs smoke serve mlflow-ui clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml uv.lock
	@test -n "$(PYTHON)" || { echo "Python 3.11 is needed (python3.11 not found)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	@# Compiled now, once: where PYTHONDONTWRITEBYTECODE is set, every process would
	@# otherwise compile mlflow, numba and the rest again (seconds per command).
	UV_PROJECT_ENVIRONMENT=$(VENV) $(BIN)/uv sync --frozen --inexact --extra spark --compile-bytecode --python $(BIN)/python
	@touch $@

install: $(STAMP) ## create .venv and install riskstrat from uv.lock

demo demo-omop: export RISKSTRAT_ENGINE = $(ENGINE)
demo: $(STAMP) ## (ENGINE=spark: on Apache Spark) make the home, generate 20,000 people, train and promote the admission and mortality models, score three months, monitor, validate externally, recalibrate, make demo keys, serve the API
	$(BIN)/riskstrat init
	@if [ ! -f "$(DEMO_EXTRACT)/manifest.json" ]; then \
	  $(BIN)/riskstrat generate --out "$(DEMO_EXTRACT)" --patients $(DEMO_PATIENTS) --seed $(DEMO_SEED) --oracle; \
	fi
	@echo "engine: $(ENGINE) (validate, predict and score; training stays on one machine)"
	$(BIN)/riskstrat validate "$(DEMO_EXTRACT)"
	$(BIN)/riskstrat train --data "$(DEMO_EXTRACT)"
	$(BIN)/riskstrat promote
	@echo "the advance care planning list is ranked by 12-month mortality: its model, from a spec alone"
	$(BIN)/riskstrat train --data "$(DEMO_EXTRACT)" --spec death_12m
	$(BIN)/riskstrat promote --spec death_12m
	@echo "three months: one whose 90-day outcomes have matured (monitoring follows it), then the last two ('what changed')"
	$(BIN)/riskstrat score --data "$(DEMO_EXTRACT)" --month latest-3
	$(BIN)/riskstrat score --data "$(DEMO_EXTRACT)" --month latest-1
	$(BIN)/riskstrat score --data "$(DEMO_EXTRACT)" --month latest
	$(BIN)/riskstrat monitor --data "$(DEMO_EXTRACT)"
	@if [ ! -f "$(DEMO_OTHER)/manifest.json" ]; then \
	  $(BIN)/riskstrat generate --out "$(DEMO_OTHER)" --patients $$(( $(DEMO_PATIENTS) / 2 )) --seed $$(( $(DEMO_SEED) + 1000 )); \
	fi
	@echo "another area: the champion validated there, then recalibrated on it (a challenger; not promoted)"
	$(BIN)/riskstrat evaluate champion --data "$(DEMO_OTHER)"
	$(BIN)/riskstrat recalibrate champion --data "$(DEMO_OTHER)"
	@for role in pcn_team care_coordinator analyst admin; do \
	  if [ ! -s "$(DEMO_KEYS)/$$role.key" ]; then \
	    $(BIN)/riskstrat users add --name demo-$$role --role $$role --pcn '*' --key-file "$(DEMO_KEYS)/$$role.key" || exit 1; \
	  fi; \
	done
	@echo "demo API keys, one per role, every PCN: $(DEMO_KEYS)/<role>.key"
	@echo "try: curl -H \"Authorization: Bearer \$$(cat $(DEMO_KEYS)/pcn_team.key)\" 'http://127.0.0.1:8000/api/v1/cohorts/falls_review?capacity=5'"
	@echo "pages: sign in at http://127.0.0.1:8000/login with a role's key; each role lands on its home:"
	@echo "  care_coordinator ($(DEMO_KEYS)/care_coordinator.key) -> /patients: find a patient by NHS number, recently viewed"
	@echo "  pcn_team         ($(DEMO_KEYS)/pcn_team.key) -> /cohorts: the current lists, marks, hide done, downloads"
	@echo "  analyst          ($(DEMO_KEYS)/analyst.key) -> /model: the champion model, its measures, monitoring and card"
	@echo "  admin            ($(DEMO_KEYS)/admin.key) -> /admin: who can sign in"
	$(BIN)/riskstrat serve

demo-omop: $(STAMP) ## the demo from an OMOP CDM: generate the population as a CDM 5.4, import it (pseudonymous), train, promote, score, serve
	RISKSTRAT_HOME="$(OMOP_HOME)" $(BIN)/riskstrat init
	@if [ ! -e "$(OMOP_SOURCE)" ]; then \
	  $(BIN)/riskstrat generate --out "$(OMOP_CDM)" --patients $(DEMO_PATIENTS) --seed $(DEMO_SEED) --format omop --omop-layout $(OMOP_LAYOUT); \
	fi
	RISKSTRAT_HOME="$(OMOP_HOME)" $(BIN)/riskstrat import omop --source "$(OMOP_SOURCE)" \
	  --sites "$(OMOP_CDM)/site_map.csv" --imd "$(OMOP_CDM)/imd_lookup.csv" --out "$(OMOP_EXTRACT)" --overwrite
	@echo "mapping report: $(OMOP_EXTRACT)/mapping-report.md"
	RISKSTRAT_HOME="$(OMOP_HOME)" $(BIN)/riskstrat validate "$(OMOP_EXTRACT)"
	RISKSTRAT_HOME="$(OMOP_HOME)" $(BIN)/riskstrat train --data "$(OMOP_EXTRACT)"
	RISKSTRAT_HOME="$(OMOP_HOME)" $(BIN)/riskstrat promote
	RISKSTRAT_HOME="$(OMOP_HOME)" $(BIN)/riskstrat train --data "$(OMOP_EXTRACT)" --spec death_12m
	RISKSTRAT_HOME="$(OMOP_HOME)" $(BIN)/riskstrat promote --spec death_12m
	RISKSTRAT_HOME="$(OMOP_HOME)" $(BIN)/riskstrat score --data "$(OMOP_EXTRACT)" --month latest
	@for role in pcn_team care_coordinator analyst admin; do \
	  if [ ! -s "$(OMOP_HOME)/keys/$$role.key" ]; then \
	    RISKSTRAT_HOME="$(OMOP_HOME)" $(BIN)/riskstrat users add --name demo-$$role --role $$role --pcn '*' --key-file "$(OMOP_HOME)/keys/$$role.key" || exit 1; \
	  fi; \
	done
	@echo "demo API keys, one per role, every PCN: $(OMOP_HOME)/keys/<role>.key; people are identified by pseudonym"
	@echo "re-identify a list for direct care: RISKSTRAT_HOME=$(OMOP_HOME) $(BIN)/riskstrat export --month <YYYY-MM> --cohort falls_review --linkage $(OMOP_CDM)/linkage.csv --purpose 'direct care'"
	RISKSTRAT_HOME="$(OMOP_HOME)" $(BIN)/riskstrat serve

test: $(STAMP) browser ## run the whole test suite
	$(BIN)/pytest

test-fast: $(STAMP) ## the fast loop: every test not marked slow (under two minutes)
	$(BIN)/pytest -m "not slow"

browser: ## install Debian's Chromium for the browser test, when run as root with apt
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium for the browser test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "no /usr/bin/chromium and no root apt-get: the browser test will be skipped"; \
	  fi; \
	fi

bench: $(STAMP) ## every stage at 100k, 300k and 909k people, with growth (about 30 minutes)
	$(BIN)/riskstrat bench

lint: $(STAMP) ## every pre-commit hook on every file: ruff, ruff format, mypy strict, notebooks, secrets
	$(BIN)/pre-commit run --all-files --show-diff-on-failure

format: $(STAMP) ## apply ruff's formatting and fixes
	$(BIN)/ruff format src tests tools pipelines service
	$(BIN)/ruff check --fix src tests tools pipelines service

docs: $(STAMP) ## build the manual (docs/, MkDocs Material) strictly into site/: a broken link fails
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

smoke: $(STAMP) ## build the wheel, install it in a fresh venv, run it from an empty directory
	.ci/wheel-smoke-test

mlflow-ui: $(STAMP) ## MLflow's own UI on the local store, on 127.0.0.1:5000
	$(BIN)/riskstrat ui

serve: $(STAMP) ## serve the API on the latest published run
	$(BIN)/riskstrat serve

clean: ## remove the environment and everything under RISKSTRAT_HOME
	rm -rf $(VENV) "$(RISKSTRAT_HOME)"
