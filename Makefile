# Two commands for a fresh machine (Python 3.11, Java 17, Node 20, no Docker): `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
HANDBOOK ?= ../shared/data/handbook/transactions.parquet
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install demo demo-handbook test test-unit test-functional test-e2e benchmark lambda-deps synth clean

# uv resolves this dependency set in seconds where pip backtracks for minutes (docs/architecture.md). It is
# installed inside the project's venv, so nothing touches the system Python (PEP 668 distributions too).
$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv
	$(VENV)/bin/python -m uv pip install --quiet -p $(PY) -r requirements.txt -e .
	touch $@

install: $(VENV)/.installed

demo: install  ## the main job on the built-in transaction simulator
	$(PY) -m frauddetect demo --workdir runs/demo

demo-handbook: install  ## the main job on the handbook week 2018-08-15..21
	$(PY) -m frauddetect demo --input $(HANDBOOK) --start 2018-08-15 --end 2018-08-21 --workdir runs/handbook --json

test: install  ## every tier
	$(PY) -m pytest

test-unit: install
	$(PY) -m pytest -m unit

test-functional: install
	$(PY) -m pytest -m functional

test-e2e: install
	$(PY) -m pytest -m e2e

benchmark: install
	$(PY) benchmarks/bench_demo.py --input $(HANDBOOK)

# The label feedback Lambda's third-party code as an arm64 layer (confluent-kafka ships librdkafka in its
# wheel; the MSK IAM signer's own dependencies, boto3/botocore, are in the Lambda runtime). Needs PyPI once;
# `cdk synth` then picks the folder up offline (infra/feedback.py).
LAMBDA_DEPS := build/lambda-deps/python
lambda-deps: install
	rm -rf $(LAMBDA_DEPS)
	$(PY) -m pip install --quiet --disable-pip-version-check --target $(LAMBDA_DEPS) --no-deps \
		--only-binary=:all: --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
		--python-version 3.13 --implementation cp \
		"confluent-kafka>=2.6,<3" "aws-msk-iam-sasl-signer-python>=1.0,<2"

ENV ?= dev
# The model's alert threshold (metadata.json "threshold"); prod refuses to synth without it (infra/config.py).
THRESHOLD ?=
comma := ,
synth: install  ## one environment's templates into cdk.out, offline, cdk-nag: make synth ENV=prod THRESHOLD=0.42
	CDK_CONTEXT_JSON='{"env":"$(ENV)"$(if $(THRESHOLD),$(comma)"alert_threshold":"$(THRESHOLD)")}' $(PY) app.py

clean:
	rm -rf runs spark-warehouse metastore_db derby.log
