"""Database engines: one module per engine behind :class:`dbtier.engines.base.Engine`."""
