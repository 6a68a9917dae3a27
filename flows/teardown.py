"""Teardown: stop every process of the cluster by its pid file; keep the data unless --wipe.

    python -m flows.teardown [--spec FILE] [--wipe] [--drop-backups] [--destroy-hosts]

Backups stay in the repositories unless ``--drop-backups``: a new cluster of the same name is
refused until they are restored (``flows.restore --in-place``) or dropped.

``--destroy-hosts`` (provider proxmox) then stops and destroys the containers dbtier created
for the cluster, and only those: each carries the tags ``dbtier`` and ``dbtier-<cluster>``.
"""

from __future__ import annotations

import os
import sys

from prefect import flow, get_run_logger

from dbtier.spec import ClusterSpec
from flows._cli import EXIT_OK, run_edge, spec_parser
from flows._names import run_name
from flows._spec import resolve_spec
from tasks.backup import drop_backups as drop_cluster_backups
from tasks.cluster import destroy_hosts as destroy_cluster_hosts
from tasks.cluster import stop_cluster, wipe_cluster


@flow(name="teardown", flow_run_name=run_name("teardown"))
def teardown(spec_path: str | None = None, spec_block: str | None = None, wipe: bool = False,
             destroy_hosts: bool = False, drop_backups: bool = False) -> list[str]:
    """Stop members, then etcd; with ``wipe`` also delete the cluster's data directory; with
    ``drop_backups`` also delete its stanza (backups and WAL) from every repository; with
    ``destroy_hosts`` also destroy the containers the proxmox provider created."""
    spec = resolve_spec(spec_path, spec_block)
    logger = get_run_logger()
    sentences = stop_cluster(spec)
    if drop_backups:
        sentences.append(drop_cluster_backups(spec))
    else:
        logger.info("backups kept in the repositories (pass --drop-backups to delete them)")
    if wipe:
        sentences.append(wipe_cluster(spec))
    elif not (destroy_hosts and spec.provider == "proxmox"):  # a destroyed container takes its data along
        logger.info("data kept under %s (pass --wipe to delete it)", spec.cluster_dir)
    if destroy_hosts:
        sentences += destroy_cluster_hosts(spec)
    return sentences


def main(argv: list[str] | None = None) -> int:
    parser = spec_parser("Stop a dbtier cluster's processes (data kept unless --wipe).")
    parser.add_argument("--wipe", action="store_true", default=os.environ.get("DBTIER_WIPE") == "1",
                        help="also delete the cluster's data directory (or DBTIER_WIPE=1)")
    parser.add_argument("--destroy-hosts", action="store_true",
                        help="provider proxmox: also stop and destroy the containers dbtier created (data included)")
    parser.add_argument("--drop-backups", action="store_true", default=os.environ.get("DBTIER_DROP_BACKUPS") == "1",
                        help="also delete the cluster's backups and archived WAL from every repository")
    args = parser.parse_args(argv)

    def body(spec: ClusterSpec) -> int:
        for sentence in teardown(spec_path=args.spec, wipe=args.wipe, destroy_hosts=args.destroy_hosts,
                                 drop_backups=args.drop_backups):
            print(sentence)
        return EXIT_OK

    return run_edge(body, args.spec)


if __name__ == "__main__":
    sys.exit(main())
