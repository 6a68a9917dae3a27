"""``dbtier lab up | status | down``: a lab of separate hosts on this machine (root only).

    dbtier lab up [--name lab] [--hosts 3] [--subnet 198.18.0.0/24]
    dbtier lab status [--name lab] [--json]      exit 0 when every host runs, 1 when some do not, 3 no such lab
    dbtier lab down [--name lab]                 everything gone; a second down is a no-op
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from dbtier.arguments import Parser
from dbtier.errors import DbtierError

NO_LAB = 3


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="dbtier lab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=Parser)
    up = sub.add_parser("up", help="make the bridge, boot the hosts, serve S3, write the ready specs",
                        description="Bring a lab up: N hosts, each with its own network namespace (one address on "
                        "the lab's bridge, no route off this machine), its own root file system (an overlay of this "
                        "machine's) and systemd booting an sshd on port 22; S3 (moto, TLS) on the bridge; a ready "
                        "spec for provider ssh, and the PVE API double with a ready spec for provider proxmox. An existing lab that runs is "
                        "left as it is; exit 0 when every host runs, 2 refused.")
    up.add_argument("--hosts", type=int, default=3, help="how many hosts, 1-9")
    up.add_argument("--subnet", help="a /24 inside 198.18.0.0/15 (default: the first one free on this machine)")
    status = sub.add_parser("status", help="hosts, addresses and what runs in each")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("down", help="stop every host by PID, remove bridge, mounts and directories")
    for cmd in sub.choices.values():
        cmd.add_argument("--name", default="lab", help="the lab's name: 1-8 lower-case letters or digits")
    return parser


def _up(args: argparse.Namespace) -> int:
    from dbtier.lab import lab

    state = lab.up(args.name, args.hosts, args.subnet, progress=lambda line: print(line, flush=True))
    _save_blocks(state)
    return _status(argparse.Namespace(name=args.name, json=False))


def _save_blocks(state: object) -> None:
    """The S3Repository block the lab's spec names, where a Prefect API is at hand (else one line saying how)."""
    from dbtier.lab import plan
    from dbtier.lab.lab import LabState

    assert isinstance(state, LabState)
    s3, pve = plan.s3_block_name(state.name), plan.pve_block_name(state.name)
    try:
        # Named, not imported: the library never imports blocks/ (the lab runs without Prefect, then says so here).
        importlib.import_module("blocks.lab").save_lab_blocks(state)
    except Exception as err:  # noqa: BLE001 - any failure of the Prefect API: say it in one line, the lab stays up
        print(f"lab {state.name}: blocks {s3} and {pve} not saved ({type(err).__name__}); the specs' backups and the "
              f"proxmox spec need them: save them from {state.public / 's3.json'} and the PVE double's pve-api.json")
    else:
        print(f"lab {state.name}: blocks {s3} (S3, bucket {plan.S3_BUCKET}) and {pve} (PVE API) saved")


def _status(args: argparse.Namespace) -> int:
    from dbtier.lab import lab

    found = lab.status(args.name)
    if found is None:
        print(f"no lab {args.name} (bring one up with `dbtier lab up --name {args.name}`)")
        return NO_LAB
    if getattr(args, "json", False):
        print(json.dumps(found, indent=2))
    else:
        print(f"lab {found['name']}: bridge {found['bridge']} {found['gateway']} ({found['subnet']}), "
              f"S3 {found['s3'] or 'not running'}, PVE API {found['pve'] or 'not running'}")
        for host in found["hosts"]:
            services = ", ".join(host["services"]) or "-"
            print(f"  {host['name']:<10} {host['address']:<15} {host['state']:<8} {services}")
        print(f"specs: {found['ssh_spec']} (provider ssh), {found['proxmox_spec']} (provider proxmox)")
        print(f"key: {found['key_file']}  (ssh -i KEY root@ADDRESS)")
    return 0 if all(h["state"] == "running" for h in found["hosts"]) else 1


def _down(args: argparse.Namespace) -> int:
    from dbtier.lab import lab

    lab.down(args.name, progress=lambda line: print(line, flush=True))
    return 0


ACTIONS = {"up": _up, "status": _status, "down": _down}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return ACTIONS[args.action](args)
    except DbtierError as err:
        print(f"dbtier lab: error: {err.one_line()}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"dbtier lab: interrupted; `dbtier lab down --name {args.name}` removes what was made", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
