# tenant-operator: the project's verbs. Everything installs itself (Debian
# packages, Go builds cached by version, Python deps in .venv).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DEVENV  := .devenv
CONFIG  ?= $(DEVENV)/operator-config.yaml
PYTEST_ARGS ?=

.PHONY: help venv devenv-up devenv-down devenv-purge tools lint unit integration test e2e run demo bench render docs clean

help:
	@echo "make demo         bring up the local platform and provision an example Tenant end to end"
	@echo "make test         lint + unit tests + integration tests against the local platform"
	@echo "make e2e          the Helm chart with the locally built image on the local node (pods, NetworkPolicies, Jobs)"
	@echo "make devenv-up    build (cached) and start etcd, kube-apiserver, controller-manager, MariaDB, RabbitMQ, MinIO and a node"
	@echo "make devenv-down  stop them (data kept; devenv-purge removes it)"
	@echo "make run          run the operator in the foreground against the local platform"
	@echo "make bench        benchmark against the local platform (BENCH_N tenants)"
	@echo "make docs         render the README's spec reference from the CRD's descriptions"

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)

devenv-up:
	bash devenv/install-deps.sh
	bash devenv/up.sh

devenv-down:
	bash devenv/down.sh

# helm, hadolint and promtool for the packaging and alerting-rule tests (cached by version, linked into .devenv/bin).
tools:
	mkdir -p $(DEVENV)/bin
	bash devenv/install-tools.sh

devenv-purge:
	bash devenv/down.sh --purge

lint: $(STAMP)
	$(VENV)/bin/ruff check operator tests bench
	$(VENV)/bin/bandit -q -r operator/tenant_operator

unit: $(STAMP) tools
	PATH=$(CURDIR)/$(DEVENV)/bin:$$PATH $(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

integration: $(STAMP) devenv-up tools
	source $(DEVENV)/env && $(PY) -m pytest -q tests/integration $(PYTEST_ARGS)

test: lint unit integration

# End to end on the local node: build (cached) and import the operator image,
# install the chart, run tests/node.
e2e: $(STAMP) devenv-up tools
	source $(DEVENV)/env && CONTAINERD_ADDRESS=$(DEVENV)/node/run/containerd.sock bash devenv/images.sh operator && \
	  $(PY) -m pytest -q tests/node $(PYTEST_ARGS)

run: $(STAMP) devenv-up
	source $(DEVENV)/env && kubectl apply --server-side -f crds/ >/dev/null && \
	  $(VENV)/bin/tenant-operator run --config $(CONFIG)

demo: $(STAMP) devenv-up
	source $(DEVENV)/env && $(PY) -m tenant_operator.demo --config $(CONFIG)

bench: $(STAMP) devenv-up
	source $(DEVENV)/env && $(PY) bench/run.py --config $(CONFIG)

render: $(STAMP)
	$(VENV)/bin/tenant-operator render examples/tenant-premium.yaml

# The README's spec reference is generated from the CRD (tests fail when it is stale).
docs: $(STAMP)
	$(PY) -m tenant_operator.crd_reference crds/tenant.yaml README.md

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
