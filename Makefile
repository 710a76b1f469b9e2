# duewatch — developer entry points. `make help` lists them.
#
# Kafka settings come from the environment: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093),
# KAFKA_DATA_DIR (deploy/kafka/run). See streams/dev/broker.py.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# touched after a successful `pip install`; older than pyproject.toml -> reinstall
VENV_STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv compile test-pure kafka-jars kafka-up kafka-down kafka-status registry-build registry-up registry-down \
	registry-status asyncapi-tools lint test fuzz demo bench chaos

help:
	@echo "make venv          create $(VENV) (python >= 3.11), pip install -e '.[test]', compile streams/core"
	@echo "make compile       compile streams/core with mypyc into build/native (pure Python without a C compiler)"
	@echo "make kafka-jars    fetch the Kafka broker jars from Maven Central (cached)"
	@echo "make kafka-up      start the local single-node Kafka (KRaft) on 127.0.0.1:\$${KAFKA_PORT:-9092}"
	@echo "make kafka-status  is it running?"
	@echo "make kafka-down    stop it"
	@echo "make registry-build build the schema registry (Apicurio) from Maven Central (cached)"
	@echo "make registry-up   start it on 127.0.0.1:\$${REGISTRY_PORT:-8081} (API at /apis/ccompat/v7)"
	@echo "make registry-status / registry-down"
	@echo "make asyncapi-tools install the pinned AsyncAPI parser (tools/asyncapi, npm ci)"
	@echo "make lint          ruff check and format --check, mypy (strict on streams/core)"
	@echo "make test          lint + all tests (starts its own broker on free ports), core tests also as pure Python"
	@echo "make test-pure     the core's unit tests against its sources (DUEWATCH_PURE_PYTHON=1)"
	@echo "make fuzz          the fuzz suite with 2,000 examples per property, and the poison records through the stream"
	@echo "make demo          the end-to-end demo"
	@echo "make bench         throughput benchmark"
	@echo "make chaos         crashes, a broker failure, rebalances on a 3-node cluster vs replay (<= 10 min; report in docs/reliability.md)"

# --- python environment -------------------------------------------------------

# The compile step runs every time but builds only when the build does not fit the sources (it
# compares their SHA-256, not mtimes, so a checkout or a touch does not rebuild): quiet when fresh.
# --setup: a failed build says so in one line and set-up goes on with the sources (pure Python).
# The build tool itself runs the core's sources (DUEWATCH_PURE_PYTHON=1): it is about to replace
# the build, so a stale one is not worth a warning.
venv: $(VENV_STAMP)
	@DUEWATCH_PURE_PYTHON=1 $(PY) -m streams.dev.compile --setup

$(VENV_STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "need Python >= 3.11 (PYTHON=$(PYTHON) is $$($(PYTHON) --version 2>&1))"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# --- the compiled core ------------------------------------------------------------
# streams/core compiled by mypyc from these same sources into build/native (streams/dev/compile.py).
# streams/core/compiled.py loads the build only when it was made from exactly the sources in the
# tree (SHA-256 of each), so an edited source runs as Python until the next build, never as old
# compiled code. Without a C compiler (or Python.h) set-up says so in one line on stderr and the
# sources run: same results, slower. DUEWATCH_PURE_PYTHON=1 runs the sources anyway.
# Unlike `make venv`, `make compile` fails when the build fails.
compile: $(VENV_STAMP)
	DUEWATCH_PURE_PYTHON=1 $(PY) -m streams.dev.compile

# --- local Kafka ---------------------------------------------------------------

kafka-jars: venv
	$(PY) -m streams.dev.broker jars

kafka-up: venv kafka-jars
	$(PY) -m streams.dev.broker up

kafka-down: venv
	$(PY) -m streams.dev.broker down

kafka-status: venv
	$(PY) -m streams.dev.broker status

# --- local schema registry (registry mode, SPEC §6) ------------------------------
# Apicurio Registry built from Maven Central (deploy/registry; ~200 MB of Maven downloads the
# first time, cached in ~/.m2 and by deploy/registry/target/.stamp after). REGISTRY_PORT (8081),
# REGISTRY_RUN_DIR (deploy/registry/run). See streams/dev/registry.py.

registry-build: venv
	$(PY) -m streams.dev.registry build

registry-up: venv registry-build
	$(PY) -m streams.dev.registry up

registry-down: venv
	$(PY) -m streams.dev.registry down

registry-status: venv
	$(PY) -m streams.dev.registry status

# --- AsyncAPI parser (tests/unit/test_asyncapi.py validates schemas/asyncapi.yaml with it) ----
# Versions pinned by tools/asyncapi/package-lock.json; `npm ci` reinstalls only when the lock
# file is newer than the installed tree.

ASYNCAPI_STAMP := tools/asyncapi/node_modules/.installed

asyncapi-tools: $(ASYNCAPI_STAMP)

$(ASYNCAPI_STAMP): tools/asyncapi/package.json tools/asyncapi/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "make asyncapi-tools: npm not found (Node.js 18+ with npm is needed)"; exit 1; }
	cd tools/asyncapi && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# --- tools ----------------------------------------------------------------------
# promtool, for the Prometheus rule tests in tests/deploy: Debian's `prometheus` package
# (/usr/bin/promtool), installed without recommends (no node-exporter, smartmontools...).
# Only when missing, only as root with apt-get; otherwise those tests skip with a message.
# A policy-rc.d that forbids service starts is put in place for the install (unless one
# exists already), and the service is disabled afterwards (systemd or sysv-rc), so no
# Prometheus server is left listening on :9090, now or after a reboot.

.PHONY: tools tools-promtool tools-chromium
tools: tools-promtool tools-chromium

tools-promtool:
	@if command -v promtool >/dev/null 2>&1 || [ -x /usr/bin/promtool ]; then \
		exit 0; \
	fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
		echo "make tools: promtool not found, and installing it needs root and apt-get;"; \
		echo "            the promtool tests in tests/deploy will be SKIPPED."; \
		echo "            Install it with: sudo apt-get install --no-install-recommends prometheus"; \
		exit 0; \
	fi; \
	echo "make tools: installing promtool (Debian package 'prometheus', no recommends)"; \
	apt-get update -qq || true; \
	if ! apt-cache policy prometheus 2>/dev/null | grep -q 'Candidate: [0-9]'; then \
		echo "make tools: apt has no 'prometheus' package here; the promtool tests will be SKIPPED."; \
		exit 0; \
	fi; \
	rcd=/usr/sbin/policy-rc.d; made_rcd=; \
	if [ ! -e $$rcd ]; then \
		trap 'rm -f '$$rcd EXIT INT TERM; \
		printf '#!/bin/sh\nexit 101\n' > $$rcd && chmod 755 $$rcd && made_rcd=1; \
	fi; \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	rc=$$?; \
	if [ -n "$$made_rcd" ]; then rm -f $$rcd; fi; \
	if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then \
		systemctl disable --now prometheus >/dev/null 2>&1 || true; \
	elif command -v update-rc.d >/dev/null 2>&1; then \
		update-rc.d prometheus disable >/dev/null 2>&1 || true; \
	fi; \
	if [ $$rc -ne 0 ]; then \
		echo "make tools: apt-get install prometheus failed ($$rc); the promtool tests will be SKIPPED."; \
	else \
		echo "make tools: $$(promtool --version 2>&1 | head -n 1)"; \
	fi

# Chromium, for the risk report's browser test (tests/integration/test_report_browser.py):
# Debian's `chromium` package (/usr/bin/chromium), no recommends; the test drives it over the
# DevTools protocol, so no browser is downloaded by any tool. Only when missing, only as root
# with apt-get; otherwise the test skips (and fails under CI=true).
tools-chromium:
	@if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then \
		exit 0; \
	fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
		echo "make tools: chromium not found, and installing it needs root and apt-get;"; \
		echo "            the report's browser test will be SKIPPED (a FAILURE under CI=true)."; \
		echo "            Install it with: sudo apt-get install --no-install-recommends chromium"; \
		exit 0; \
	fi; \
	echo "make tools: installing chromium (Debian package 'chromium', no recommends)"; \
	apt-get update -qq || true; \
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; then \
		echo "make tools: apt-get install chromium failed; the report's browser test will be SKIPPED."; \
		exit 0; \
	fi; \
	echo "make tools: $$(/usr/bin/chromium --version 2>/dev/null | head -n 1)"

# --- checks ---------------------------------------------------------------------

# ruff (lint, complexity at most 15, private members only in the fenced module) and its
# formatter, mypy on everything and --strict on the pure core.
lint: venv
	$(VENV)/bin/ruff check streams tests
	$(VENV)/bin/ruff format --check streams tests
	$(VENV)/bin/mypy streams
	$(VENV)/bin/mypy --strict streams/core

# Everything in the form set-up built (compiled when a compiler is there; under CI=true a test
# fails unless it is), then the core's unit tests again against its sources: both forms tested.
test: venv kafka-jars registry-build asyncapi-tools tools lint
	$(VENV)/bin/pytest -q
	DUEWATCH_PURE_PYTHON=1 $(VENV)/bin/pytest -q tests/unit/core

# The core's unit tests against its sources, whether or not a compiled build exists.
test-pure: venv
	DUEWATCH_PURE_PYTHON=1 $(VENV)/bin/pytest -q tests/unit/core

# Hostile records at and beyond every bound of SPEC §2, many more examples than `make test` runs.
fuzz: venv kafka-jars
	HYPOTHESIS_PROFILE=fuzz $(VENV)/bin/pytest -q tests/unit/test_fuzz.py tests/unit/core/test_bounded_state.py tests/integration/test_poison.py

# --- the main job and the benchmarks ---------------------------------------------

# The demo sets itself up: venv, broker jars; it starts (and stops) the broker itself unless one
# runs already or KAFKA_BOOTSTRAP_SERVERS is set. DEMO_ARGS="--loans 2000 --days 30 --speed 2" etc.
demo: venv kafka-jars
	$(VENV)/bin/duewatch demo $(DEMO_ARGS)

bench: venv
	$(PY) -m streams.dev.bench

# docs/reliability.md: three workers on a 3-node cluster through SIGKILLs, a broker SIGKILL and
# 3 -> 2 -> 3, checked against replay. Bounded: the run gives up after 570 s (exit 1). Each run
# writes its report into docs/reliability.md. CHAOS_ARGS="--seed 42 --keep" etc.
chaos: venv kafka-jars
	$(PY) -m streams.dev.chaos --docs $(CHAOS_ARGS)
