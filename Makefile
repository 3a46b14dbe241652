# The two set-up commands are `make demo` and `make test`; both build .venv on first use and install
# (as root, Debian packages, once) the real servers they run against: scripts/ensure-servers.sh.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
KERNEL := mistral-runbooks

.PHONY: demo test lab bench clean install

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (mistral-runbooks)" >/dev/null
	@# no "receive Jupyter news?" prompt in the middle of an incident (it also fetches from the internet)
	$(BIN)/jupyter labextension disable --level=sys_prefix @jupyterlab/apputils-extension:announcements >/dev/null 2>&1
	@touch $(STAMP)

demo: $(STAMP)
	bash scripts/ensure-servers.sh demo
	$(BIN)/runbook demo --full

test: $(STAMP)
	bash scripts/ensure-servers.sh test
	$(BIN)/python -m pytest -n 2 --dist loadgroup

lab: $(STAMP)
	$(BIN)/runbook lab

bench: $(STAMP)
	$(BIN)/python benchmarks/triage.py
	$(BIN)/python benchmarks/evidence.py
	$(BIN)/python benchmarks/serve_latency.py

clean:
	rm -rf $(VENV) build *.egg-info
