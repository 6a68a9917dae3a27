"""Teardown: stop every process of the cluster by its pid file; keep the data unless --wipe.

    python -m flows.teardown [--spec FILE] [--wipe]
"""

from __future__ import annotations

import os
import sys

from prefect import flow, get_run_logger

from dbtier.spec import ClusterSpec
from flows._cli import EXIT_OK, run_edge, spec_parser
from flows._spec import resolve_spec
from tasks.cluster import stop_cluster, wipe_cluster


@flow(name="teardown")
def teardown(spec_path: str | None = None, spec_block: str | None = None, wipe: bool = False) -> list[str]:
    """Stop members, then etcd; with ``wipe`` also delete the cluster's data directory."""
    spec = resolve_spec(spec_path, spec_block)
    sentences = stop_cluster(spec)
    if wipe:
        wipe_cluster(spec)
        sentences.append(f"wiped {spec.cluster_dir}")
    else:
        get_run_logger().info("data kept under %s (pass --wipe to delete it)", spec.cluster_dir)
    return sentences


def main(argv: list[str] | None = None) -> int:
    parser = spec_parser("Stop a dbtier cluster's processes (data kept unless --wipe).")
    parser.add_argument("--wipe", action="store_true", default=os.environ.get("DBTIER_WIPE") == "1",
                        help="also delete the cluster's data directory (or DBTIER_WIPE=1)")
    args = parser.parse_args(argv)

    def body(spec: ClusterSpec) -> int:
        for sentence in teardown(spec_path=args.spec, wipe=args.wipe):
            print(sentence)
        return EXIT_OK

    return run_edge(body, args.spec)


if __name__ == "__main__":
    sys.exit(main())
