# One entry point for people and CI. `make demo` and `make test` work on a fresh clone:
# they install what is missing (system packages, venv, jars) first.
PYTHON_BIN ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# Thread mode embeds the venv's interpreter: its bin must lead PATH for Flink's scripts.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup system-deps venv jars stack-start stack-stop stack-status demo test \
        test-unit test-e2e lint clean bench bench-full bench-deps

setup: system-deps venv jars

# Java 17+ and Maven from Debian when missing (needs root, as on the CI machines).
system-deps:
	@if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -q && apt-get install -y -q openjdk-17-jdk-headless maven; \
	  else \
	    echo "error: Java 17+ and Maven are needed: install openjdk-17-jdk-headless and maven" >&2; exit 2; \
	  fi; \
	fi

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON_BIN) >/dev/null || { echo "error: $(PYTHON_BIN) not found (the project needs Python 3.11)" >&2; exit 2; }
	test -d $(VENV) || $(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q ".[dev]"
	touch $@

# Connector jars -> jars/flink, Kafka broker -> jars/kafka (see flink-conf/pom.xml).
jars: jars/.fetched
jars/.fetched: flink-conf/pom.xml
	rm -rf jars/flink jars/kafka  # no stale versions left beside new ones
	mvn -q -B -f flink-conf/pom.xml package
	touch $@

stack-start: setup
	$(PY) -m stack start
stack-stop:
	$(PY) -m stack stop
stack-status:
	$(PY) -m stack status

demo: setup
	$(PY) -m demo

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest

test-unit: venv
	$(PY) -m pytest tests/unit

test-e2e: setup
	$(PY) -m pytest tests/e2e

# Benchmark (issue 8) on the local stack: quick (< 10 min) or full. Needs the `bench` extra
# (Quix Streams, matplotlib, py-spy) and baseline (a)'s Java table function, built by Maven
# from bench/java/. Results in bench/results/; the last line is JSON.
BENCH_UDF_JAR := bench/java/target/email-bench-udf.jar
bench-deps: $(VENV)/.bench-installed $(BENCH_UDF_JAR)
$(VENV)/.bench-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q ".[dev,bench]"
	touch $@
$(BENCH_UDF_JAR): bench/java/pom.xml $(shell find bench/java/src -name '*.java')
	mvn -q -B -f bench/java/pom.xml package

bench: setup bench-deps stack-start
	$(PY) -m bench --mode quick

bench-full: setup bench-deps stack-start
	$(PY) -m bench --mode full

lint: venv
	$(PY) -m ruff check .

clean: stack-stop
	rm -rf .stack build jars
