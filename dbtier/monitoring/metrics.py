"""dbtier's own metrics, the ones no exporter has, in Prometheus' text format (pure: facts in, text out).

The flows that learn them (backup, archive health, the drills, certificates) write them to a file per source
that node exporter's textfile collector reads (write it whole, then rename: :func:`textfile_name`), so a value
outlives the flow and a restart. Every value is a timestamp or comes with one
(``dbtier_metrics_written_timestamp_seconds``): an alert compares it with ``time()``, so a value nobody renews
goes stale visibly instead of looking fresh.

    dbtier_backup_newest_timestamp_seconds{cluster, repo, kind}   the newest good backup of each kind
    dbtier_archive_ok{cluster}                                    1 when archive health passed
    dbtier_archive_lag_seconds{cluster}                           how long WAL waited to be archived
    dbtier_restore_drill_passed{cluster} / _timestamp_seconds / _restore_seconds
    dbtier_failover_drill_passed{cluster, scenario} / _timestamp_seconds / _rto_seconds / _lost_writes
    dbtier_certificate_expiry_timestamp_seconds{cluster}          when the first certificate expires
    dbtier_metrics_written_timestamp_seconds{cluster, source}     when a source last wrote its file
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

#: name -> (type, help) of every metric dbtier writes.
METRICS: dict[str, tuple[str, str]] = {
    "dbtier_backup_newest_timestamp_seconds": ("gauge", "When the newest good backup of a kind finished"),
    "dbtier_archive_ok": ("gauge", "1 when dbtier's archive health check passed, 0 when it failed"),
    "dbtier_archive_lag_seconds": ("gauge", "How long the oldest unarchived WAL has waited"),
    "dbtier_restore_drill_passed": ("gauge", "1 when the last restore drill passed"),
    "dbtier_restore_drill_timestamp_seconds": ("gauge", "When the last restore drill ended"),
    "dbtier_restore_drill_restore_seconds": ("gauge", "How long the last restore drill's restore took"),
    "dbtier_failover_drill_passed": ("gauge", "1 when the last failover drill of a scenario passed"),
    "dbtier_failover_drill_timestamp_seconds": ("gauge", "When the last failover drill of a scenario ended"),
    "dbtier_failover_drill_rto_seconds": ("gauge", "The last failover drill's RTO"),
    "dbtier_failover_drill_lost_writes": ("gauge", "Acknowledged writes the last failover drill lost"),
    "dbtier_certificate_expiry_timestamp_seconds": ("gauge", "When the cluster's first certificate expires"),
    "dbtier_metrics_written_timestamp_seconds": ("gauge", "When a dbtier source last wrote its metrics"),
}
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


@dataclass(frozen=True)
class Sample:
    name: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)


def _escape(value: str) -> str:
    """
    >>> _escape('a"b\\\\c')
    'a\\\\"b\\\\\\\\c'
    """
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    """
    >>> _number(3.0), _number(0.25), _number(float("nan"))
    ('3', '0.25', 'NaN')
    """
    if value != value:
        return "NaN"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render(samples: Sequence[Sample], cluster: str, source: str, now: float) -> str:
    """The text of one source's file: ``samples`` with the cluster's label, and the source's written-at stamp.

    >>> print(render([Sample("dbtier_archive_ok", 1), Sample("dbtier_archive_lag_seconds", 12.5)], "orders", "archive", 1700000000), end="")
    # HELP dbtier_archive_ok 1 when dbtier's archive health check passed, 0 when it failed
    # TYPE dbtier_archive_ok gauge
    dbtier_archive_ok{cluster="orders"} 1
    # HELP dbtier_archive_lag_seconds How long the oldest unarchived WAL has waited
    # TYPE dbtier_archive_lag_seconds gauge
    dbtier_archive_lag_seconds{cluster="orders"} 12.5
    # HELP dbtier_metrics_written_timestamp_seconds When a dbtier source last wrote its metrics
    # TYPE dbtier_metrics_written_timestamp_seconds gauge
    dbtier_metrics_written_timestamp_seconds{cluster="orders",source="archive"} 1700000000
    """
    every = [*samples, Sample("dbtier_metrics_written_timestamp_seconds", now, {"source": source})]
    lines: list[str] = []
    for name in dict.fromkeys(s.name for s in every):
        if name not in METRICS:
            raise ValueError(f"metric {name}: not one of dbtier's (dbtier.monitoring.metrics.METRICS)")
        kind, text = METRICS[name]
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for sample in (s for s in every if s.name == name):
            labels = {"cluster": cluster, **sample.labels}
            bad = [key for key in labels if not _LABEL.match(key)]
            if bad:
                raise ValueError(f"metric {name}: label {bad[0]!r} is not a Prometheus label name")
            body = ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())
            lines.append(f"{name}{{{body}}} {_number(sample.value)}")
    return "\n".join(lines) + "\n"


def textfile_name(cluster: str, source: str) -> str:
    """The file of one source in the textfile collector's directory (``.prom``: the collector reads only those;
    write ``<name>.tmp`` first and rename it, so a scrape never sees half a file).

    >>> textfile_name("orders", "restore-drill")
    'dbtier-orders-restore-drill.prom'
    """
    return f"dbtier-{cluster}-{source}.prom"


def archive_samples(healthy: bool, lag_s: float) -> list[Sample]:
    """
    >>> [(s.name, s.value) for s in archive_samples(False, 12.0)]
    [('dbtier_archive_ok', 0), ('dbtier_archive_lag_seconds', 12.0)]
    """
    return [Sample("dbtier_archive_ok", 1 if healthy else 0), Sample("dbtier_archive_lag_seconds", lag_s)]


def newest_backups(backups: Sequence[tuple[int, str, float]]) -> dict[tuple[int, str], float]:
    """(repository, kind) -> when its newest good backup stopped, from (repository, kind, stop) of each good one.
    A newer full counts for diff and incr too, a newer diff for incr: the alert asks "is there a recent backup
    at least this complete", and a full is more than a differential.

    >>> newest_backups([(1, "full", 10.0), (1, "diff", 20.0), (1, "full", 30.0), (2, "incr", 5.0)])
    {(1, 'full'): 30.0, (1, 'diff'): 30.0, (1, 'incr'): 30.0, (2, 'incr'): 5.0}
    """
    covers = {"full": ("full", "diff", "incr"), "diff": ("diff", "incr")}
    newest: dict[tuple[int, str], float] = {}
    for repo, kind, stop in backups:
        for counted in covers.get(kind, (kind,)):
            newest[(repo, counted)] = max(newest.get((repo, counted), stop), stop)
    return newest


def backup_samples(newest: Mapping[tuple[int, str], float]) -> list[Sample]:
    """``newest``: (repository, kind) -> when its newest good backup stopped (epoch seconds).

    >>> [(s.labels["repo"], s.labels["kind"], s.value) for s in backup_samples({(1, "full"): 10.0, (2, "diff"): 20.0})]
    [('1', 'full', 10.0), ('2', 'diff', 20.0)]
    """
    return [Sample("dbtier_backup_newest_timestamp_seconds", stop, {"repo": str(repo), "kind": kind})
            for (repo, kind), stop in sorted(newest.items())]


def restore_drill_samples(passed: bool, restore_s: float, ended: float) -> list[Sample]:
    return [Sample("dbtier_restore_drill_passed", 1 if passed else 0),
            Sample("dbtier_restore_drill_timestamp_seconds", ended),
            Sample("dbtier_restore_drill_restore_seconds", restore_s)]


def failover_drill_samples(scenario: str, passed: bool, rto_s: float | None, lost: int, ended: float) -> list[Sample]:
    """An RTO the drill could not measure is NaN (Prometheus keeps it, no alert compares it).

    >>> [s.value for s in failover_drill_samples("crash", True, None, 0, 5.0)][2]
    nan
    """
    scenario_label = {"scenario": scenario}
    return [Sample("dbtier_failover_drill_passed", 1 if passed else 0, scenario_label),
            Sample("dbtier_failover_drill_timestamp_seconds", ended, scenario_label),
            Sample("dbtier_failover_drill_rto_seconds", float("nan") if rto_s is None else rto_s, scenario_label),
            Sample("dbtier_failover_drill_lost_writes", lost, scenario_label)]


def certificate_samples(first_expiry: float) -> list[Sample]:
    return [Sample("dbtier_certificate_expiry_timestamp_seconds", first_expiry)]
