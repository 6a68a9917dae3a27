# dbtier: the two set-up commands are `make provision` and `make test`; both install what they need.
VENV ?= .venv
PY := $(VENV)/bin/python
SPEC_ARG := $(if $(SPEC),--spec $(SPEC),)
WIPE_ARG := $(if $(filter 1 yes true,$(WIPE)),--wipe,) $(if $(filter 1 yes true,$(DROP_BACKUPS)),--drop-backups,)

.PHONY: setup provision test test-quick teardown status bench lint backup archive-health restore restore-drill serve bench-backup monitor

setup:
	@bash scripts/setup.sh

provision: setup
	$(PY) -m flows.provision $(SPEC_ARG)

# Prometheus, Alertmanager and node exporter for the cluster, on this machine (after provision).
monitor: setup
	$(PY) -m flows.monitoring $(SPEC_ARG)

test: setup
	bash scripts/test.sh

# The pure tables and doctests only: no cluster, no service, a few seconds.
test-quick: setup
	$(PY) -m pytest -q -p no:cacheprovider tests/unit dbtier flows deployments

teardown: setup
	$(PY) -m flows.teardown $(SPEC_ARG) $(WIPE_ARG)

status: setup
	$(VENV)/bin/dbtier status $(SPEC_ARG)

bench: setup
	$(PY) bench/provision.py

bench-backup: setup
	$(PY) bench/backup.py

backup: setup
	$(PY) -m flows.backup $(SPEC_ARG) $(if $(KIND),--kind $(KIND),)

archive-health: setup
	$(PY) -m flows.archive_health $(SPEC_ARG)

# make restore TARGET='2026-11-26 01:02:03+00' [INTO=name]  (a new cluster; the source is never touched)
restore: setup
	$(PY) -m flows.restore $(SPEC_ARG) --target "$(or $(TARGET),latest)" $(if $(INTO),--into $(INTO),)

restore-drill: setup
	$(PY) -m flows.restore_drill $(SPEC_ARG)

# Serve the scheduled deployments (nightly backup, archive health, weekly restore drill, monthly failover drill)
# of one cluster on this machine (SPEC, else the default spec: never every sample); with PREFECT_API_URL set
# they show in that server's UI.
serve: setup
	$(PY) -m deployments.serve $(SPEC_ARG)

lint: setup
	$(VENV)/bin/ruff check dbtier flows tasks blocks tests bench
	$(VENV)/bin/mypy
