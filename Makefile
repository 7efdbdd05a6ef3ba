# pitstop: two commands for a newcomer. `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: bytecode demo test install install-test system-deps lint typecheck clean bench-backup bench-cleanup bench-fleet bench-downtime bench-overhead bench-pool reliability static

$(BIN)/python:
	@echo "creating $(VENV)..."
	@$(PY) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip > /dev/null 2>&1 || true

$(VENV)/.installed: $(BIN)/python pyproject.toml
	@echo "installing pitstop and its dependencies into $(VENV) (the first time takes a minute or two)..."
	@$(BIN)/pip install -q -e . > $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	$(MAKE) --no-print-directory bytecode
	touch $@

## Compile pitstop's own modules once: an editable install gets no bytecode from pip, and with
## PYTHONDONTWRITEBYTECODE set (as on CI images) every start would compile them again (~40 ms).
bytecode: $(BIN)/python
	$(BIN)/python -m compileall -q pitstop flows >/dev/null

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	@echo "installing the test tools into $(VENV)..."
	@$(BIN)/pip install -q -e '.[test]' > $(VENV)/install-test.log 2>&1 || { cat $(VENV)/install-test.log; exit 1; }
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

## Run the monthly runbook against the embedded demo environment.
demo: install bytecode
	$(BIN)/pitstop demo

system-deps:
	scripts/ensure-system-deps.sh
	scripts/ensure-pg-versions.sh

lint: install-test
	$(BIN)/ruff check pitstop flows checks tests

typecheck: install-test
	$(BIN)/mypy pitstop

## Install everything the tests need, then run the suite.
test: install-test system-deps static bytecode
	$(BIN)/python -m pytest -q --durations=25 tests

## Static checks: ruff (with the bandit-derived S rules) and mypy on pitstop/.
static: install-test
	$(BIN)/ruff check pitstop flows checks tests
	$(BIN)/mypy pitstop

clean:
	rm -rf $(VENV) .pitstop

## Pre-backup benchmark: pgbench scale 100 + moto S3 on loopback (several minutes; not part of `make test`).
bench-backup: install-test bytecode
	$(BIN)/python bench/bench_backup.py

## Cleanup benchmark: pgbench p99 / lock waits during pitstop's purge vs a single DELETE (~5 min).
bench-cleanup: install
	$(BIN)/python bench/bench_cleanup.py

## Fleet benchmark: N sshd hosts on loopback (10, 100); pitstop vs ssh+xargs, ansible-core, pyinfra.
bench-fleet: install-test system-deps bytecode
	$(BIN)/python bench/bench_fleet.py

## Downtime benchmark: 20 local hosts, naive runbook vs pitstop's plan; in-window time and overhead (~15 s).
bench-downtime: install
	$(BIN)/python bench/bench_downtime.py

## Start-up benchmark: what Prefect adds to a demo run (warm, cold), the first line, orphans after SIGKILL,
## 8 concurrent starts, the no-op window (~10 min on 2 shared cores).
bench-overhead: install bytecode
	$(BIN)/python bench/bench_overhead.py

## Reliability suite: every kill point, injection payload and fault (~5 min); prints one line of figures.
reliability: install-test system-deps
	$(BIN)/python tests/reliability/run_suite.py

## Pool benchmark: one Prefect server on PostgreSQL, 2 process workers, 12 environments whose monthly runs fire
## at once plus 4 duplicate triggers; lock refusals, overlaps and makespan vs serial (~4 min).
bench-pool: install-test system-deps bytecode
	$(BIN)/python bench/bench_pool.py
