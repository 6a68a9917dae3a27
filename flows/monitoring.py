"""Monitoring: the exporters on the cluster's hosts, then Prometheus, Alertmanager and node exporter for it on this
machine (idempotent).

    python -m flows.monitoring [--spec FILE]      (make monitor)

Starts the exporters beside what they watch (PostgreSQL's per member, node exporter per member host other than this
one; ``monitoring.exporters``) and dbtier's PgBouncer exporter beside the stack. Prometheus scrapes them, every member's Patroni, every
etcd member, every router's HAProxy and this machine's node exporter (which also serves dbtier's own metrics:
backups, archive health, drills), loads dbtier's alert rules and sends alerts to Alertmanager, which posts them to
``monitoring.webhook_url``. Waits until every target is up. ``dbtier teardown`` stops the exporters and the stack
with the cluster.

A MongoDB replica set: dbtier's MongoDB exporter beside the stack asks each member (as the ``monitoring`` user);
the replica set's own rules (a member down, no primary, lag) beside the shared ones.
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow

from dbtier.engines.base import get_engine
from dbtier.errors import PreflightError
from dbtier.monitoring.run import port_problems
from dbtier.spec import ClusterSpec
from flows._cli import EXIT_OK, run_edge, spec_parser
from flows._names import run_name
from flows._spec import resolve_spec
from tasks.monitoring import start_exporters, start_monitoring, wait_for_targets


@flow(name="monitoring", flow_run_name=run_name("monitoring"))
def monitoring(spec_path: str | None = None, spec_block: str | None = None) -> dict[str, Any]:
    """Bring the exporters and the monitoring stack up (or in line with the spec), then wait for every target."""
    spec = resolve_spec(spec_path, spec_block)
    said = start_exporters(spec)
    said += start_monitoring(spec)
    up = wait_for_targets(spec)
    mon = spec.monitoring
    return {"cluster": spec.name, "steps": said, "targets": up,
            "prometheus": f"http://{mon.host}:{mon.ports.prometheus}",
            "alertmanager": f"http://{mon.host}:{mon.ports.alertmanager}"}


def main(argv: list[str] | None = None) -> int:
    args = spec_parser("Run the exporters on a cluster's hosts, and Prometheus, Alertmanager and node exporter for it "
                       "on this machine (exit 0 once every target is up).").parse_args(argv)

    def body(spec: ClusterSpec) -> int:
        # a clashing or busy port is refused in one line, before the flow run starts
        problems = get_engine(spec).exporter_problems(spec) + port_problems(spec)
        if problems:
            raise PreflightError(problems[0])
        result = monitoring(spec_path=args.spec)
        print(result["targets"])
        print(f"alerts:   {result['alertmanager']} (webhook: {spec.monitoring.webhook_url or 'none; set monitoring.webhook_url'})")
        return EXIT_OK

    return run_edge(body, args.spec)


if __name__ == "__main__":
    sys.exit(main())
