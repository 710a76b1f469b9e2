# duewatch — developer entry points. `make help` lists them.
#
# Kafka settings come from the environment: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093),
# KAFKA_DATA_DIR (deploy/kafka/run). See streams/devkafka.py.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# touched after a successful `pip install`; older than pyproject.toml -> reinstall
VENV_STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv kafka-jars kafka-up kafka-down kafka-status lint test demo bench

help:
	@echo "make venv          create $(VENV) (python >= 3.11) and pip install -e '.[test]'"
	@echo "make kafka-jars    fetch the Kafka broker jars from Maven Central (cached)"
	@echo "make kafka-up      start the local single-node Kafka (KRaft) on 127.0.0.1:\$${KAFKA_PORT:-9092}"
	@echo "make kafka-status  is it running?"
	@echo "make kafka-down    stop it"
	@echo "make lint          ruff check"
	@echo "make test          lint + all tests (starts its own broker on free ports)"
	@echo "make demo          the end-to-end demo"
	@echo "make bench         throughput benchmark"

# --- python environment -------------------------------------------------------

venv: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "need Python >= 3.11 (PYTHON=$(PYTHON) is $$($(PYTHON) --version 2>&1))"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# --- local Kafka ---------------------------------------------------------------

kafka-jars: venv
	$(PY) -m streams.devkafka jars

kafka-up: venv kafka-jars
	$(PY) -m streams.devkafka up

kafka-down: venv
	$(PY) -m streams.devkafka down

kafka-status: venv
	$(PY) -m streams.devkafka status

# --- checks ---------------------------------------------------------------------

lint: venv
	$(VENV)/bin/ruff check streams tests

test: venv kafka-jars lint
	$(VENV)/bin/pytest -q

# --- placeholders (replaced by later issues) ---------------------------------------

demo:
	@echo "make demo: coming — see issue 7"

bench: venv
	@if [ -f streams/bench.py ] || [ -f streams/bench/__main__.py ]; then \
		$(PY) -m streams.bench; \
	else \
		echo "make bench: not yet (no streams.bench module)"; \
	fi
