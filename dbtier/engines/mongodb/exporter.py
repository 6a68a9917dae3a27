"""dbtier's MongoDB exporter: one process beside the monitoring stack that asks each member of a replica set for
Prometheus, which scrapes ``/metrics?target=host:port`` once per member (the multi-target pattern).

    python -m dbtier.engines.mongodb.exporter --config FILE --listen HOST:PORT

For each scrape it connects to that member alone (``directConnection``), as the ``monitoring`` user (role
``clusterMonitor``; its password in a 0600 file the config names), over TLS verifying the cluster CA when TLS is on,
and asks ``hello`` and ``replSetGetStatus``. A member that does not answer gives ``mongodb_up 0`` (and one line on
stderr), never a failed scrape. Only the members of its config are scraped (anything else is refused with 400).

The config (JSON, written by dbtier): ``{"user": NAME, "password_file": PATH, "tls_ca_file": PATH or "",
"targets": {"host:port": "mongo0", ...}}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from dbtier.engines.mongodb.rs import lag_seconds
from dbtier.monitoring.exposition import Metric, multi_target_handler, serve

UP_HELP = "1 when the member answered this scrape"
#: The longest a scrape waits for a member; less when Prometheus waits less (half the scrape's own timeout: the rest
#: is for the driver's own set-up and close and a loaded machine, so the answer, ``mongodb_up 0``, reaches
#: Prometheus before it gives up on the scrape and drops the member's series).
TIMEOUT_S = 3.0


def budget_ms(scrape_timeout_s: float) -> int:
    """How long the driver may wait for a member, in ms, within a scrape of ``scrape_timeout_s`` seconds.

    >>> budget_ms(10), budget_ms(2), budget_ms(0.5)
    (3000, 1000, 300)
    """
    return int(max(0.3, min(TIMEOUT_S, scrape_timeout_s / 2)) * 1000)


def families(member: str, hello: Mapping[str, Any], status: Mapping[str, Any] | None) -> list[Metric]:
    """The metrics of one member's ``hello`` and ``replSetGetStatus`` replies, ``mongodb_up 1`` first, each labelled
    with the member's name; what a reply lacks (no status before the set is initiated) is left out.

    >>> from datetime import datetime
    >>> t = datetime(2026, 12, 5, 1, 2, 3)
    >>> status = {"myState": 2, "term": 4, "members": [
    ...     {"name": "h:1", "stateStr": "PRIMARY", "health": 1, "optimeDate": t},
    ...     {"name": "h:2", "stateStr": "SECONDARY", "health": 1, "optimeDate": t.replace(second=0), "self": True},
    ...     {"name": "h:3", "stateStr": "(not reachable/healthy)", "health": 0}]}
    >>> [(m.name, m.samples[0][1]) for m in families("mongo1", {"isWritablePrimary": False}, status)]
    [('mongodb_up', 1.0), ('mongodb_member_primary', 0.0), ('mongodb_member_state', 2.0), ('mongodb_replset_term', 4.0), ('mongodb_replset_healthy_members', 2.0), ('mongodb_replication_lag_seconds', 3.0)]
    >>> families("mongo0", {"isWritablePrimary": True}, None)[1].samples
    [({'member': 'mongo0'}, 1.0)]
    """
    labels = {"member": member}

    def gauge(name: str, help_text: str, value: float) -> Metric:
        return Metric(name, "gauge", help_text, [(labels, float(value))])

    found = [gauge("mongodb_up", UP_HELP, 1.0),
             gauge("mongodb_member_primary", "1 when the member is the writable primary",
                   1.0 if hello.get("isWritablePrimary") else 0.0)]
    if not status:
        return found
    members = [dict(m) for m in status.get("members", [])]
    found += [gauge("mongodb_member_state", "the member's replica-set state (1 PRIMARY, 2 SECONDARY, 8 DOWN, ...)",
                    float(status.get("myState", 0))),
              gauge("mongodb_replset_term", "the election term the member knows", float(status.get("term", 0))),
              gauge("mongodb_replset_healthy_members", "members the member sees as healthy",
                    float(sum(1 for m in members if m.get("health") == 1)))]
    me = next((m for m in members if m.get("self")), None)
    primary = next((m for m in members if m.get("stateStr") == "PRIMARY"), None)
    lag = lag_seconds(me, primary) if me is not None and primary is not None else None
    if lag is not None:
        found.append(gauge("mongodb_replication_lag_seconds", "how far the member's last applied operation is behind "
                           "the primary's", lag))
    return found


def down(member: str) -> list[Metric]:
    return [Metric("mongodb_up", "gauge", UP_HELP, [({"member": member}, 0.0)])]


@dataclass(frozen=True)
class Config:
    user: str
    password_file: str
    tls_ca_file: str
    targets: dict[str, str]  # host:port -> member name

    @classmethod
    def load(cls, path: str) -> Config:
        data: dict[str, Any] = json.loads(open(path, encoding="utf-8").read())
        return cls(user=data["user"], password_file=data["password_file"], tls_ca_file=data.get("tls_ca_file", ""),
                   targets=dict(data["targets"]))


def connect(config: Config, target: str, timeout_ms: int) -> MongoClient[Any]:
    """A client of the member ``target`` alone, as the config's user (its password read from its file now), that
    gives up on it after ``timeout_ms``."""
    host, _, port = target.rpartition(":")
    tls: dict[str, Any] = {"tls": True, "tlsCAFile": config.tls_ca_file} if config.tls_ca_file else {}
    password = open(config.password_file, encoding="utf-8").read().strip()
    return MongoClient(host, int(port), directConnection=True, username=config.user, password=password,
                       authSource="admin", appname="dbtier-exporter", serverSelectionTimeoutMS=timeout_ms,
                       connectTimeoutMS=timeout_ms, socketTimeoutMS=timeout_ms, **tls)


def scrape(config: Config, target: str, scrape_timeout_s: float = TIMEOUT_S + 0.5,
           connecting: Callable[[Config, str, int], MongoClient[Any]] = connect) -> list[Metric]:
    """One member's metrics now; ``mongodb_up 0`` and a line on stderr when it does not answer within the scrape's
    time (:func:`budget_ms`)."""
    member = config.targets[target]
    try:
        client = connecting(config, target, budget_ms(scrape_timeout_s))
        try:
            hello = dict(client.admin.command("hello"))
            try:
                status: dict[str, Any] | None = dict(client.admin.command("replSetGetStatus"))
            except PyMongoError as err:
                if getattr(err, "code", None) != 94:  # NotYetInitialized: no status, still up
                    raise
                status = None
        finally:
            client.close()
    except (OSError, PyMongoError) as err:
        print(f"mongodb-exporter: {member} ({target}): {type(err).__name__}: {str(err).splitlines()[0][:200]}",
              file=sys.stderr, flush=True)
        return down(member)
    return families(member, hello, status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dbtier.engines.mongodb.exporter",
                                     description="Serve each replica-set member's state and lag to Prometheus.")
    parser.add_argument("--config", required=True, help="the JSON config dbtier writes (members, user, TLS)")
    parser.add_argument("--listen", required=True, metavar="HOST:PORT", help="where Prometheus scrapes it")
    args = parser.parse_args(argv)
    try:
        config = Config.load(args.config)
        serve(args.listen, multi_target_handler("mongodb exporter", config.targets,
                                                lambda target, seconds: scrape(config, target, seconds)))
    except (OSError, ValueError, KeyError) as err:
        print(f"mongodb-exporter: cannot start ({args.config}, {args.listen}): {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
