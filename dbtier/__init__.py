"""dbtier: provision, run, back up and drill a high-availability database tier."""

__version__ = "0.1.0"
