"""Status: the member table and a verdict; exit code 0 only when the cluster is healthy.

    python -m flows.status [--spec FILE]
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow, get_run_logger

from dbtier.health import format_table
from dbtier.spec import ClusterSpec
from flows._cli import EXIT_FAILED, EXIT_OK, run_edge, spec_parser
from flows._names import run_name
from flows._spec import resolve_spec
from tasks.cluster import publish_member_table, read_alerts, read_router_views, read_status


@flow(name="status", flow_run_name=run_name("status"))
def status(spec_path: str | None = None, spec_block: str | None = None) -> dict[str, Any]:
    """Read the cluster's health from Patroni and etcd and publish the member table."""
    spec = resolve_spec(spec_path, spec_block)
    routers, disagreements = read_router_views(spec)
    current = read_status(spec).with_router_problems(disagreements)
    alerts = read_alerts(spec)
    publish_member_table(spec, current.rows, current.health.sentence)
    get_run_logger().info("cluster %s is %s", spec.name, current.health.sentence)
    return {"cluster": spec.name, "healthy": current.health.healthy, "problems": current.health.problems,
            "members": current.rows, "routers": routers, "alerts": alerts}


def main(argv: list[str] | None = None) -> int:
    args = spec_parser("Report a dbtier cluster's health (exit 0 only when healthy).").parse_args(argv)

    def body(spec: ClusterSpec) -> int:
        result = status(spec_path=args.spec)
        print(format_table(result["members"]))
        for line in [*result.get("routers", []), *([result["alerts"]] if result.get("alerts") else [])]:
            print(line)
        print("healthy" if result["healthy"] else "unhealthy: " + "; ".join(result["problems"]))
        return EXIT_OK if result["healthy"] else EXIT_FAILED

    return run_edge(body, args.spec)


if __name__ == "__main__":
    sys.exit(main())
