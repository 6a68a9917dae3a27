"""``python -m dbtier.lab.pve``: serve the PVE test double until SIGTERM (see :mod:`dbtier.lab.pve.serve`)."""

from dbtier.lab.pve.serve import main

if __name__ == "__main__":
    raise SystemExit(main())
