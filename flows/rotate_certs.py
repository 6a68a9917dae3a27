"""Rotate certificates: a new certificate for every member and service, installed, then reloaded in place.

    python -m flows.rotate_certs [--spec FILE]

The cluster CA stays (its key in the Secret block ``dbtier-<cluster>-ca-key``); every leaf gets a new key
and serial number. Services are reloaded, never restarted, so no leader changes (see
``Engine.reload_certificates`` for what each service reads on a reload).
"""

from __future__ import annotations

import sys

from prefect import flow, get_run_logger

from blocks.ca import require_ca
from blocks.lock import changes_cluster, cluster_lock
from dbtier.spec import ClusterSpec
from flows._cli import EXIT_OK, run_edge, spec_parser
from flows._names import run_name
from flows._spec import resolve_spec
from tasks.certs import refuse_without_ca, reload_services, rotate_certificates
from tasks.cluster import wait_until_healthy
from tasks.metrics import record_certificate_metrics


@flow(name="rotate-certs", flow_run_name=run_name("rotate-certs"))
@changes_cluster("rotate-certs")
def rotate_certs(spec_path: str | None = None, spec_block: str | None = None) -> list[str]:
    """Issue new certificates for every member and service, install them, reload the services, check health."""
    spec = resolve_spec(spec_path, spec_block)
    refuse_without_ca(spec)
    sentences = rotate_certificates(spec)
    record_certificate_metrics(spec)
    sentences += reload_services(spec)
    status = wait_until_healthy(spec)
    get_run_logger().info("cluster %s: certificates rotated; %s", spec.name, status.health.sentence)
    return [*sentences, status.health.sentence]


def main(argv: list[str] | None = None) -> int:
    args = spec_parser("Issue new certificates for every member and service and reload them (no failover).").parse_args(argv)

    def body(spec: ClusterSpec) -> int:
        require_ca(spec.name)  # a cluster never provisioned is refused in one line, before the flow run starts
        with cluster_lock(spec.name, "rotate-certs"):
            said = rotate_certs(spec_path=args.spec)
        for sentence in said:
            print(sentence)
        return EXIT_OK

    return run_edge(body, args.spec)


if __name__ == "__main__":
    sys.exit(main())
