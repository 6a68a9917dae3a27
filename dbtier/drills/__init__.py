"""Failover drills: a writer under load, fault injection, scenarios and a pure verdict.

``writer`` keeps the acknowledged-write log, ``faults`` breaks one thing through the
Runner or Patroni's REST API, ``scenarios`` runs one drill from healthy back to
healthy, and ``verdict`` turns the evidence into a pass or a list of reasons.
"""
