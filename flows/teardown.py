"""Teardown: stop every process of the cluster by its pid file; keep the data unless --wipe.

    python -m flows.teardown [--spec FILE] [--wipe] [--drop-backups] [--destroy-hosts]

Backups stay in the repositories unless ``--drop-backups``: a new cluster of the same name is
refused until they are restored (``flows.restore --in-place``) or dropped.

Teardown looks before it destroys: what exists (data, processes, stanza, blocks; a cluster that
never existed is "nothing to tear down"), whose marker the directory carries, that nothing runs
after the stop; only then the stanza, the data, the cluster's Secret blocks and variables
(``--wipe``) and, last, the cipher block (``--wipe --drop-backups``, when no other cluster may need it).

On hosts of the cluster's own (providers ssh and proxmox) teardown also removes the cluster's host firewall:
its nft table ``inet dbtier_fw_<cluster>``, ``/etc/dbtier/firewall-<cluster>.nft`` and the unit
``dbtier-firewall-<cluster>.service``; nothing else of the hosts' nftables.

``--destroy-hosts`` (provider proxmox) then stops and destroys the containers dbtier created
for the cluster, and only those: each carries the tags ``dbtier`` and ``dbtier-<cluster>``.
"""

from __future__ import annotations

import os
import sys

from prefect import flow, get_run_logger

from dbtier import bootstrap
from dbtier.cleanup import nothing_sentence
from dbtier.engines.base import get_engine
from dbtier.providers.base import get_provider, resolve_addresses
from dbtier.spec import ClusterSpec
from blocks.lock import changes_cluster, cluster_lock
from blocks.loaders import PREFECT_LOADERS
from flows._cli import EXIT_OK, run_edge, spec_parser
from flows._names import run_name
from flows._spec import resolve_spec
from tasks.backup import drop_backups as drop_cluster_backups
from tasks.cluster import destroy_hosts as destroy_cluster_hosts
from tasks.cluster import stop_cluster, wipe_cluster
from tasks.firewall import remove_firewall
from tasks.monitoring import stop_monitoring
from tasks.teardown import check_stopped, drop_cipher, forget_blocks, survey_cluster


@flow(name="teardown", flow_run_name=run_name("teardown"))
@changes_cluster("teardown")
def teardown(spec_path: str | None = None, spec_block: str | None = None, wipe: bool = False,
             destroy_hosts: bool = False, drop_backups: bool = False) -> list[str]:
    """Stop members, then etcd; with ``wipe`` also delete the cluster's data directory; with
    ``drop_backups`` also delete its backups and archive (PostgreSQL: its stanza) from every repository; with
    ``destroy_hosts`` also destroy the containers the proxmox provider created."""
    spec = resolve_spec(spec_path, spec_block)
    logger = get_run_logger()
    found = survey_cluster(spec, drop_backups, wipe)  # look first: nothing destroyed yet
    own_backups = drop_backups and spec.name in found["archived"]
    if not (found["hosts"] or found["running"] or own_backups or found["blocks"] or destroy_hosts):
        return [nothing_sentence(spec, _checked(spec, drop_backups, wipe))]
    sentences = stop_monitoring(spec)  # this machine's Prometheus of the cluster first: it would only alert
    sentences += stop_cluster(spec)
    sentences += remove_firewall(spec)  # the host firewall's table, rules file and boot unit on each host
    if wipe or own_backups:
        check_stopped(spec, wipe)  # nothing left running, the directories ours: checked before anything goes
    if drop_backups:
        sentences.append(drop_cluster_backups(spec) if own_backups else
                         f"no backups of {spec.name} in any repository: nothing to drop")
    else:
        logger.info("backups kept in the repositories (pass --drop-backups to delete them)")
    if wipe:
        sentences.append(wipe_cluster(spec))
    elif not (destroy_hosts and spec.provider == "proxmox"):  # a destroyed container takes its data along
        logger.info("data kept under %s (pass --wipe to delete it)", spec.cluster_dir)
    if destroy_hosts:
        sentences += destroy_cluster_hosts(spec)  # forgets its containers' host keys, and says so
    if wipe:
        sentences += forget_blocks(spec, backups_remain=not drop_backups, cipher_step_follows=drop_backups)
    if wipe and drop_backups:  # the key to the backups goes last, after the stanza, and only if nobody needs it
        sentences.append(drop_cipher(spec, [s for s in found["archived"] if s != spec.name]))
    return sentences


def _checked(spec: ClusterSpec, drop_backups: bool, wipe: bool) -> list[str]:
    """What a teardown that found nothing looked at."""
    checked = ["no process of it runs", f"no {spec.cluster_dir}"]
    if drop_backups:
        checked.append(f"no backups of {spec.name} in any repository")
    if wipe:
        checked.append(f"no Secret block or variable of {spec.name}")
    return checked


def main(argv: list[str] | None = None) -> int:
    parser = spec_parser("Stop a dbtier cluster's processes (data kept unless --wipe).\n\n"
                         "On ssh and proxmox hosts it also removes the cluster's host firewall (nft table\n"
                         "inet dbtier_fw_<cluster>, /etc/dbtier/firewall-<cluster>.nft, dbtier-firewall-<cluster>.service).")
    parser.add_argument("--wipe", action="store_true", default=os.environ.get("DBTIER_WIPE") == "1",
                        help="also delete the cluster's data directory (or DBTIER_WIPE=1)")
    parser.add_argument("--destroy-hosts", action="store_true",
                        help="provider proxmox: also stop and destroy the containers dbtier created (data included)")
    parser.add_argument("--drop-backups", action="store_true", default=os.environ.get("DBTIER_DROP_BACKUPS") == "1",
                        help="also delete the cluster's backups and its archive (WAL or oplog) from every repository")
    args = parser.parse_args(argv)

    def body(spec: ClusterSpec) -> int:
        if args.wipe:  # a directory of another cluster is refused in one line, before the flow run starts
            resolved = resolve_addresses(spec, loaders=PREFECT_LOADERS)
            bootstrap.check_owned(get_engine(resolved), get_provider(resolved, PREFECT_LOADERS), resolved)
        with cluster_lock(spec.name, "teardown"):
            said = teardown(spec_path=args.spec, wipe=args.wipe, destroy_hosts=args.destroy_hosts,
                            drop_backups=args.drop_backups)
        for sentence in said:
            print(sentence)
        return EXIT_OK

    return run_edge(body, args.spec)


if __name__ == "__main__":
    sys.exit(main())
