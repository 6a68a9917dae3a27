# dbtier: the two set-up commands are `make provision` and `make test`; both install what they need.
VENV ?= .venv
PY := $(VENV)/bin/python
SPEC_ARG := $(if $(SPEC),--spec $(SPEC),)
WIPE_ARG := $(if $(filter 1 yes true,$(WIPE)),--wipe,)

.PHONY: setup provision test teardown status bench lint

setup:
	@bash scripts/setup.sh

provision: setup
	$(PY) -m flows.provision $(SPEC_ARG)

test: setup
	bash scripts/test.sh

teardown: setup
	$(PY) -m flows.teardown $(SPEC_ARG) $(WIPE_ARG)

status: setup
	$(VENV)/bin/dbtier status $(SPEC_ARG)

bench: setup
	$(PY) bench/provision.py

lint: setup
	$(VENV)/bin/ruff check dbtier flows tasks blocks tests bench
	$(VENV)/bin/mypy
