"""The backup feature's pure logic: catalog decisions, WAL arithmetic, rendered pgBackRest and Patroni
settings, restore specs and drill verdicts. Tables of cases; no I/O, no Prefect, no processes."""

from __future__ import annotations

import shlex
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from dbtier.engines.postgres.wal_archive import ArchiverStats, judge_archive, segments_between, wal_position
from dbtier.backup.catalog import (
    BackupRecord,
    Catalog,
    RestoreTarget,
    check_target,
    choose_kind,
    expired_labels,
    fulls_to_keep,
    human_bytes,
    parse_info,
    parse_target,
    restore_options,
)
from dbtier.backup.drill import CopyChecks, Marker, judge_copy
from dbtier.backup.repos import BackupSecrets
from dbtier.engines.postgres.pgbackrest import (
    S3Target,
    archive_command,
    backup_argv,
    command_argv,
    expire_options,
    pgpass_line,
    render_config,
    restore_bootstrap_command,
    restore_command,
)
from dbtier.backup.restore import derive_target, throwaway_spec, with_restore_from, without_restore_from
from dbtier.engines.postgres.patroni_config import render_patroni_config
from dbtier.errors import BackupError, RestoreError, SpecError
from dbtier.secrets import Passwords
from dbtier.spec import ClusterSpec, build_spec
from dbtier.engines.postgres.topology import pg_members

NOW = datetime(2026, 11, 26, 3, 0, 0, tzinfo=timezone.utc)
DEFAULT = ClusterSpec()
PGBACKREST = "/usr/bin/pgbackrest"
CONFIG = "/var/lib/dbtier/dbtier/pgbackrest/pgbackrest.conf"
PASSWORDS = Passwords(superuser="s3cr3t-super", replication="s3cr3t-repl", rewind="s3cr3t-rew", app="s3cr3t-app",
                      monitoring="s3cr3t-mon", restapi="s3cr3t-rest", etcd_root="s3cr3t-etcdroot", etcd="s3cr3t-etcd",
                      pgbouncer="s3cr3t-bouncer")


def ago(days: float = 0, hours: float = 0) -> datetime:
    return NOW - timedelta(days=days, hours=hours)


def rec(label: str, kind: str = "full", *, stop: datetime, repo: int = 1, error: bool = False) -> BackupRecord:
    """A backup record that took ten minutes and ended at ``stop``."""
    return BackupRecord(label, kind, repo, stop - timedelta(minutes=10), stop, 0, 0, None, None, error=error)


def full(days: float, *, error: bool = False) -> BackupRecord:
    return rec(f"F{days:g}d", "full", stop=ago(days), error=error)


def diff(days: float) -> BackupRecord:
    return rec(f"D{days:g}d", "diff", stop=ago(days))


# ---- catalog: parse_info ------------------------------------------------------------------------


def item(label: str, kind: str, stop: datetime, repo: int = 1, *, error: bool | None = None,
         wal: tuple[str, str] | None = None) -> dict[str, Any]:
    """One entry of ``backup`` in ``pgbackrest info --output=json``."""
    out: dict[str, Any] = {
        "label": label,
        "type": kind,
        "timestamp": {"start": int(stop.timestamp()) - 90, "stop": int(stop.timestamp())},
        "database": {"id": 1, "repo-key": repo},
        "info": {"size": 2048, "delta": 2048, "repository": {"size": 700, "delta": 512}},
        "reference": None if kind == "full" else ["20261120-010000F"],
    }
    if wal:
        out["archive"] = {"start": wal[0], "stop": wal[1]}
    if error is not None:
        out["error"] = error
    return out


def stanza(name: str, backups: list[dict[str, Any]], archives: tuple[tuple[str, str], ...] = (),
           message: str = "ok") -> dict[str, Any]:
    return {
        "name": name,
        "status": {"code": 0, "message": message},
        "archive": [{"id": "15-1", "database": {"id": 1, "repo-key": 1}, "min": lo, "max": hi} for lo, hi in archives],
        "backup": backups,
    }


W1, W2, W3, W4, W5 = (f"0000000100000000000000{n:02X}" for n in (1, 2, 3, 4, 5))
W2_TL2 = "000000020000000000000007"

TWO_REPOS = stanza(
    "main",
    [
        item("20261124-010000F", "full", ago(2), repo=2),
        item("20261125-010000F_20261125-020000D", "diff", ago(1), repo=1),
        item("20261123-010000F", "full", ago(3), repo=1),
        item("20261125-010000F_20261125-030000I", "incr", ago(0, 20), repo=2, error=True),
    ],
)


@pytest.mark.parametrize(
    ("doc", "labels", "repos", "errors", "wal", "status"),
    [
        pytest.param([], [], [], [], (None, None), "missing stanza", id="empty-doc"),
        pytest.param([stanza("other", [item("L", "full", ago(1))])], [], [], [], (None, None), "missing stanza",
                     id="stanza-missing"),
        pytest.param([stanza("main", [], message="no valid backups")], [], [], [], (None, None), "no valid backups",
                     id="no-backups"),
        pytest.param([{"name": "main"}], [], [], [], (None, None), "", id="bare-entry"),
        pytest.param(
            [stanza("other", []), TWO_REPOS],
            ["20261123-010000F", "20261124-010000F", "20261125-010000F_20261125-020000D",
             "20261125-010000F_20261125-030000I"],
            [1, 2, 1, 2], [False, False, False, True], (None, None), "ok",
            id="two-repos-out-of-order-sorted-by-stop",
        ),
        pytest.param(
            [stanza("main", [item("L", "full", ago(1))], archives=((W3, W5), (W1, W4), (W2, W2_TL2)))],
            ["L"], [1], [False], (W1, W2_TL2), "ok", id="archive-min-max-over-entries",
        ),
        pytest.param(
            [stanza("main", [], archives=(("", ""), (W2, W3)))], [], [], [], (W2, W3), "ok",
            id="archive-empty-entry-ignored",
        ),
    ],
)
def test_parse_info(doc: list[dict[str, Any]], labels: list[str], repos: list[int], errors: list[bool],
                    wal: tuple[str | None, str | None], status: str) -> None:
    catalog = parse_info(doc, "main")
    assert catalog.stanza == "main"
    assert [b.label for b in catalog.backups] == labels
    assert [b.repo for b in catalog.backups] == repos
    assert [b.error for b in catalog.backups] == errors
    assert (catalog.wal_min, catalog.wal_max) == wal
    assert catalog.status == status


def test_parse_info_record_fields() -> None:
    doc = [stanza("main", [item("20261125-010000F_20261125-020000D", "diff", ago(1), repo=2, wal=(W3, W4))])]
    (record,) = parse_info(doc, "main").backups
    assert (record.kind, record.repo, record.size, record.repo_size) == ("diff", 2, 2048, 512)
    assert (record.wal_start, record.wal_stop, record.duration_s) == (W3, W4, 90.0)
    assert record.reference == ("20261120-010000F",)
    assert record.stop == ago(1) and record.stop.tzinfo is not None


# ---- catalog: choose_kind, fulls_to_keep, expired_labels ----------------------------------------


@pytest.mark.parametrize(
    ("requested", "backups", "kind", "words"),
    [
        pytest.param("auto", [], "full", "no full backup yet", id="auto-no-backup"),
        pytest.param("auto", [diff(1)], "full", "no full backup yet", id="auto-only-diffs"),
        pytest.param("auto", [full(2)], "diff", "(F2d) is 48.0 h old", id="auto-recent-full"),
        pytest.param("auto", [full(10), full(2), diff(1)], "diff", "F2d", id="auto-newest-full-counts"),
        pytest.param("auto", [full(8)], "full", "(F8d) is 8 day(s) old (full_every_days 7)", id="auto-old-full"),
        pytest.param("auto", [full(7)], "full", "7 day(s) old", id="auto-full-exactly-at-limit"),
        pytest.param("auto", [full(8), full(1, error=True)], "full", "F8d", id="auto-error-full-ignored"),
        pytest.param("auto", [full(1, error=True)], "full", "no full backup yet", id="auto-only-error-full"),
        pytest.param("full", [full(1)], "full", "asked for full", id="explicit-full"),
        pytest.param("diff", [], "diff", "asked for diff", id="explicit-diff"),
        pytest.param("incr", [full(30)], "incr", "asked for incr", id="explicit-incr"),
    ],
)
def test_choose_kind(requested: str, backups: list[BackupRecord], kind: str, words: str) -> None:
    chosen, why = choose_kind(requested, backups, NOW, 7)
    assert chosen == kind
    assert words in why


@pytest.mark.parametrize("requested", ["weekly", "", "FULL", "differential", "Auto"])
def test_choose_kind_refuses_unknown_kinds(requested: str) -> None:
    with pytest.raises(BackupError, match="use auto, full, diff or incr"):
        choose_kind(requested, [], NOW, 7)


@pytest.mark.parametrize(
    ("backups", "keep_full", "window_days", "expected"),
    [
        pytest.param([full(20), full(10), full(3), full(1)], 2, 0, 2, id="window-0-keeps-count"),
        pytest.param([full(5), full(3)], 2, 7, 2, id="window-covers-all-count-enough"),
        pytest.param([full(20), full(10), full(3), full(1)], 2, 7, 3, id="window-needs-one-older-full"),
        pytest.param([full(20), full(10), full(6), full(5), full(3), full(1)], 2, 7, 5, id="window-keeps-all-inside"),
        pytest.param([full(20), full(10), full(3), full(1)], 3, 7, 3, id="count-already-covers-window"),
        pytest.param([full(20), full(10), full(3), full(1)], 4, 7, 4, id="count-above-window-need"),
        pytest.param([full(7), full(3)], 1, 7, 2, id="full-ending-at-window-start-kept"),
        pytest.param([full(3), full(1)], 5, 7, 5, id="keep-full-larger-than-count"),
        pytest.param([full(10), full(3), full(1), full(0.5, error=True)], 1, 7, 3, id="error-fulls-not-counted"),
        pytest.param([full(10), diff(9), full(3), diff(2)], 1, 7, 2, id="diffs-not-counted"),
        pytest.param([], 2, 7, 2, id="no-backups"),
        pytest.param(
            [full(5), full(3), full(1)], 2, 7, 3, id="window-covers-all-count-short",
        ),
    ],
)
def test_fulls_to_keep(backups: list[BackupRecord], keep_full: int, window_days: float, expected: int) -> None:
    assert fulls_to_keep(backups, keep_full, window_days, NOW) == expected


@pytest.mark.parametrize(
    ("before", "after", "gone"),
    [
        pytest.param(["A", "B", "C"], ["C"], ["A", "B"], id="oldest-two-expired"),
        pytest.param(["A", "B"], ["A", "B"], [], id="nothing-expired"),
        pytest.param(["A", "B"], [], ["A", "B"], id="all-expired"),
        pytest.param([], ["N"], [], id="nothing-before"),
        pytest.param(["A", "B"], ["B", "N"], ["A"], id="new-label-after-ignored"),
        pytest.param(["C", "A", "B"], ["A"], ["C", "B"], id="order-of-before-kept"),
    ],
)
def test_expired_labels(before: list[str], after: list[str], gone: list[str]) -> None:
    def records(labels: list[str]) -> list[BackupRecord]:
        return [rec(label, stop=ago(i)) for i, label in enumerate(labels)]

    assert expired_labels(records(before), records(after)) == gone


# ---- catalog: restore targets -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "value", "at"),
    [
        pytest.param("latest", "latest", "", None, id="latest"),
        pytest.param("", "latest", "", None, id="empty"),
        pytest.param("  latest \n", "latest", "", None, id="latest-padded"),
        pytest.param("2026-11-26 01:02:03+00", "time", "2026-11-26 01:02:03+00:00",
                     datetime(2026, 11, 26, 1, 2, 3, tzinfo=timezone.utc), id="time-space-utc"),
        pytest.param("2026-11-26T01:02:03+02:00", "time", "2026-11-26 01:02:03+02:00",
                     datetime(2026, 11, 25, 23, 2, 3, tzinfo=timezone.utc), id="time-T-separator-offset"),
        pytest.param("2026-11-26T01:02:03Z", "time", "2026-11-26 01:02:03+00:00",
                     datetime(2026, 11, 26, 1, 2, 3, tzinfo=timezone.utc), id="time-zulu"),
        pytest.param("lsn:0/3000028", "lsn", "0/3000028", None, id="lsn"),
        pytest.param("lsn:1a/ff", "lsn", "1A/FF", None, id="lsn-lowercase-upper"),
        pytest.param("name:before-migration", "name", "before-migration", None, id="name"),
        pytest.param("name:" + "n" * 63, "name", "n" * 63, None, id="name-63-chars"),
        pytest.param("20261126-010203F", "set", "20261126-010203F", None, id="label-full"),
        pytest.param("20261126-010203F_20261126-020304D", "set", "20261126-010203F_20261126-020304D", None,
                     id="label-diff"),
        pytest.param("20261126-010203F_20261126-020304I", "set", "20261126-010203F_20261126-020304I", None,
                     id="label-incr"),
        pytest.param("set:20261126-010203F", "set", "20261126-010203F", None, id="set-prefix"),
    ],
)
def test_parse_target(text: str, kind: str, value: str, at: datetime | None) -> None:
    target = parse_target(text)
    assert (target.kind, target.value, target.at) == (kind, value, at)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        pytest.param("2026-11-26 01:02:03", "time zone", id="time-without-zone"),
        pytest.param("2026-11-26T01:02:03", "time zone", id="T-time-without-zone"),
        pytest.param("2026-11-26", "time zone", id="date-only"),
        pytest.param("lsn:3000028", "not an LSN", id="lsn-no-slash"),
        pytest.param("lsn:0/XYZ", "not an LSN", id="lsn-not-hex"),
        pytest.param("lsn:", "not an LSN", id="lsn-empty"),
        pytest.param("name:", "1-63 characters", id="name-empty"),
        pytest.param("name:" + "n" * 64, "1-63 characters", id="name-too-long"),
        pytest.param("yesterday", "is not latest, a time", id="garbage-word"),
        pytest.param("20261126-010203X", "is not latest, a time", id="label-bad-type"),
        pytest.param("20261126-010203F_20261126-020304F", "is not latest, a time", id="label-second-full"),
        pytest.param("2026-13-01 00:00:00+00", "is not latest, a time", id="month-13"),
    ],
)
def test_parse_target_refuses(text: str, words: str) -> None:
    with pytest.raises(RestoreError, match=words) as err:
        parse_target(text)
    assert "\n" not in str(err.value)


#: F1 full 3 days ago, D1 diff 2 days ago, F2 an errored full 36 h ago, D2 diff 1 day ago.
CATALOG = Catalog(
    "main",
    (rec("F1", stop=ago(3)), rec("D1", "diff", stop=ago(2)), rec("F2", stop=ago(1, 12), error=True),
     rec("D2", "diff", stop=ago(1))),
    W1, W5, "ok",
)


def at(moment: datetime) -> RestoreTarget:
    return parse_target(moment.isoformat())


@pytest.mark.parametrize(
    ("target", "sentence"),
    [
        pytest.param(parse_target("latest"), "backup D2 + WAL (latest)", id="latest-newest-usable"),
        pytest.param(parse_target("lsn:0/3000028"), "backup D2 + WAL (lsn 0/3000028)", id="lsn"),
        pytest.param(parse_target("name:p1"), "backup D2 + WAL (name p1)", id="name"),
        pytest.param(parse_target("set:F1"), "backup F1", id="known-label"),
        pytest.param(at(ago(3)), "backup F1 + WAL up to", id="time-at-oldest-stop"),
        pytest.param(at(ago(2, 12)), "backup F1 + WAL up to", id="time-between-F1-and-D1"),
        pytest.param(at(ago(1, 18)), "backup D1 + WAL up to", id="time-between-D1-and-F2"),
        pytest.param(at(ago(1, 6)), "backup D1 + WAL up to", id="time-after-error-full-skips-it"),
        pytest.param(at(ago(0, 1)), "backup D2 + WAL up to", id="time-after-newest"),
    ],
)
def test_check_target(target: RestoreTarget, sentence: str) -> None:
    assert check_target(target, CATALOG, NOW).startswith(sentence)


@pytest.mark.parametrize(
    ("target", "catalog", "words"),
    [
        pytest.param(parse_target("latest"), Catalog("main", (), None, None, "no valid backups"),
                     "stanza main: no backup to restore from (no valid backups)", id="no-backups"),
        pytest.param(parse_target("latest"), Catalog("main", (rec("F", stop=ago(1), error=True),), None, None, "ok"),
                     "no backup to restore from", id="only-error-backups"),
        pytest.param(parse_target("set:20991231-000000F"), CATALOG,
                     "no backup labelled '20991231-000000F' in stanza main; newest: F1, D1, D2", id="unknown-label"),
        pytest.param(at(NOW + timedelta(minutes=1)), CATALOG, "is in the future", id="future-time"),
        pytest.param(at(ago(4)), CATALOG, "before the oldest backup ends (F1, 2026-11-23 03:00:00+00:00)",
                     id="time-before-oldest-stop"),
    ],
)
def test_check_target_refuses(target: RestoreTarget, catalog: Catalog, words: str) -> None:
    with pytest.raises(RestoreError) as err:
        check_target(target, catalog, NOW)
    assert words in str(err.value)


@pytest.mark.parametrize(
    ("text", "repo", "options"),
    [
        pytest.param("latest", None, [], id="latest"),
        pytest.param("latest", 2, ["--repo=2"], id="latest-repo2"),
        pytest.param("set:20261126-010203F", None, ["--set=20261126-010203F", "--type=immediate",
                                                    "--target-action=promote"], id="set"),
        pytest.param("set:20261126-010203F", 1, ["--repo=1", "--set=20261126-010203F", "--type=immediate",
                                                 "--target-action=promote"], id="set-repo1"),
        pytest.param("2026-11-26 01:02:03+00", None, ["--type=time", "--target=2026-11-26 01:02:03+00:00",
                                                      "--target-action=promote"], id="time"),
        pytest.param("2026-11-26 01:02:03+00", 2, ["--repo=2", "--type=time", "--target=2026-11-26 01:02:03+00:00",
                                                   "--target-action=promote"], id="time-repo2"),
        pytest.param("lsn:0/3000028", None, ["--type=lsn", "--target=0/3000028", "--target-action=promote"],
                     id="lsn"),
        pytest.param("name:before-migration", 3, ["--repo=3", "--type=name", "--target=before-migration",
                                                  "--target-action=promote"], id="name-repo3"),
    ],
)
def test_restore_options(text: str, repo: int | None, options: list[str]) -> None:
    assert restore_options(parse_target(text), repo) == options


@pytest.mark.parametrize(
    ("n", "text"),
    [
        pytest.param(0, "0 B", id="zero"),
        pytest.param(1023, "1023 B", id="just-under-KiB"),
        pytest.param(1024, "1.0 KiB", id="KiB"),
        pytest.param(1536, "1.5 KiB", id="one-and-half-KiB"),
        pytest.param(172 * 1024**2, "172.0 MiB", id="MiB"),
        pytest.param(3 * 1024**3, "3.0 GiB", id="GiB"),
        pytest.param(2 * 1024**4, "2048.0 GiB", id="TiB-shown-in-GiB"),
    ],
)
def test_human_bytes(n: int, text: str) -> None:
    assert human_bytes(n) == text


def test_backup_record_row() -> None:
    record = BackupRecord("20261126-010203F", "full", 2, datetime(2026, 11, 26, 1, 2, 3, tzinfo=timezone.utc),
                          datetime(2026, 11, 26, 1, 4, 5, 440000, tzinfo=timezone.utc), 3 * 1024**3, 1536, W1, None)
    assert record.row("yes") == {
        "label": "20261126-010203F",
        "type": "full",
        "repo": "repo2",
        "started": "2026-11-26 01:02:03+00",
        "took": "122.4 s",
        "size": "3.0 GiB",
        "stored": "1.5 KiB",
        "verified": "yes",
    }
    assert record.row()["verified"] == "not in this run"
    assert record.wal_row() == {"label": "20261126-010203F", "repo": "repo2", "WAL from": W1, "WAL to": "?"}


# ---- archive ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "position"),
    [
        pytest.param("000000010000000000000003", (1, 3), id="first-log"),
        pytest.param("0000000100000000000000FF", (1, 255), id="last-of-log-0"),
        pytest.param("000000020000000100000000", (2, 256), id="log-1-timeline-2"),
        pytest.param("0000000A0000001F000000A0", (10, 0x1F * 256 + 0xA0), id="hex-digits"),
    ],
)
def test_wal_position(name: str, position: tuple[int, int]) -> None:
    assert wal_position(name) == position


@pytest.mark.parametrize(
    ("older", "newer", "count"),
    [
        pytest.param("000000010000000000000003", "000000010000000000000005", 2, id="same-log"),
        pytest.param("000000010000000000000005", "000000010000000000000005", 0, id="same-file"),
        pytest.param("0000000100000000000000FF", "000000010000000100000000", 1, id="log-id-rollover"),
        pytest.param("0000000100000000000000FF", "000000020000000100000000", 1, id="rollover-across-timeline"),
        pytest.param("000000010000000000000010", "000000010000000200000010", 512, id="two-logs"),
        pytest.param("000000010000000000000005", "000000010000000000000003", -2, id="reversed-negative"),
    ],
)
def test_segments_between(older: str, newer: str, count: int) -> None:
    assert segments_between(older, newer) == count


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("00000001000000000000003", id="23-chars"),
        pytest.param("000000010000000000000003.partial", id="partial-suffix"),
        pytest.param("000000010000000000000003.00000028.backup", id="backup-file"),
        pytest.param("00000002.history", id="history"),
        pytest.param("0000000100000000000000ff", id="lowercase"),
        pytest.param("", id="empty"),
    ],
)
def test_wal_names_refused(name: str) -> None:
    with pytest.raises(BackupError, match="is not a WAL file name"):
        wal_position(name)
    with pytest.raises(BackupError):
        segments_between(name, "000000010000000000000003")


def stats(**fields: Any) -> ArchiverStats:
    """A healthy primary at NOW: 41 archived, the last one 1 h ago, nothing failed, nothing ready."""
    base: dict[str, Any] = {
        "now": NOW, "current_wal": "00000001000000000000002A", "archived_count": 41,
        "last_archived_wal": "000000010000000000000029", "last_archived_time": ago(0, 1),
        "failed_count": 0, "last_failed_wal": None, "last_failed_time": None,
        "ready_count": 0, "oldest_ready": None,
    }
    base.update(fields)
    return ArchiverStats(**base)


@pytest.mark.parametrize(
    ("archiver", "healthy", "pending", "lag", "words"),
    [
        pytest.param(stats(), True, 0, 0.0, "archiving keeps up: last archived 000000010000000000000029",
                     id="idle-primary-old-last-archive-nothing-ready"),
        pytest.param(stats(ready_count=2, oldest_ready=NOW - timedelta(seconds=40)), True, 2, 40.0,
                     "2 waiting, lag 40 s (limit 300 s)", id="ready-files-under-limit"),
        pytest.param(stats(ready_count=5, oldest_ready=NOW - timedelta(seconds=300)), True, 5, 300.0,
                     "keeps up", id="lag-exactly-at-limit"),
        pytest.param(stats(ready_count=7, oldest_ready=NOW - timedelta(seconds=420)), False, 7, 420.0,
                     "archive lags 420 s (7 WAL file(s) waiting), over the limit of 300 s", id="lag-over-limit"),
        pytest.param(stats(failed_count=3, last_failed_wal="00000001000000000000002A",
                           last_failed_time=ago(0, 0.5), ready_count=1, oldest_ready=NOW - timedelta(seconds=60)),
                     False, 1, 60.0, "archiving is failing: 00000001000000000000002A failed last (3 failures in all)",
                     id="failure-newer-than-success"),
        pytest.param(stats(failed_count=3, last_failed_wal="000000010000000000000020", last_failed_time=ago(1)),
                     True, 0, 0.0, "keeps up", id="failure-older-than-success"),
        pytest.param(stats(archived_count=0, last_archived_wal=None, last_archived_time=None), True, 0, 0.0,
                     "last archived none yet", id="never-archived"),
        pytest.param(stats(archived_count=0, last_archived_wal=None, last_archived_time=None, failed_count=1,
                           last_failed_wal="000000010000000000000001", last_failed_time=ago(0, 1)),
                     False, 0, 0.0, "000000010000000000000001 failed last", id="never-archived-and-failing"),
    ],
)
def test_judge_archive(archiver: ArchiverStats, healthy: bool, pending: int, lag: float, words: str) -> None:
    verdict = judge_archive(archiver, 300)
    assert (verdict.healthy, verdict.pending_segments, verdict.lag_s) == (healthy, pending, lag)
    assert words in verdict.sentence
    assert verdict.row()["verdict"] == verdict.sentence


# ---- pgBackRest config and commands -------------------------------------------------------------

S3_SPEC = build_spec({"backup": {"repositories": [{"type": "fs"}, {"type": "s3", "block": "b"}]}}, environ={})
S3 = S3Target(bucket="dbtier-bkp", endpoint="minio.lan", port=9000, region="eu-west-1", uri_style="path",
              access_key_id="AKIA-SECRET-ID", secret_access_key="very-secret-key", ca_file="/etc/ssl/minio.pem",
              verify_tls=False)
S3_VERIFIED = S3Target(bucket="dbtier-bkp", endpoint="s3.amazonaws.com", port=443, region="us-east-1",
                       uri_style="host", access_key_id="AKIA-SECRET-ID", secret_access_key="very-secret-key")
PASSPHRASE = "cipher-passphrase-xyz"


def sections(text: str) -> dict[str, list[str]]:
    """The config's lines by section (comments and blank lines left out)."""
    out: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            out[current] = []
        elif line and not line.startswith("#"):
            out.setdefault(current, []).append(line)
    return out


HOME = "/var/lib/dbtier/dbtier/pgbackrest"
PG0 = "/var/lib/dbtier/dbtier/pg0"
DEFAULT_GLOBAL = [
    "repo1-path=/var/lib/dbtier/backups", "compress-type=zst", "process-max=2", "start-fast=y", "expire-auto=n",
    "archive-timeout=120", f"log-path={HOME}/log", f"lock-path={HOME}/lock", f"spool-path={HOME}/spool",
]
STANZA_LINES = [f"pg1-path={PG0}/pgdata", "pg1-port=5432", f"pg1-socket-path={PG0}/run", "pg1-user=postgres"]


@pytest.mark.parametrize(
    ("spec", "s3", "cipher", "kwargs", "present", "absent", "stanza_name"),
    [
        pytest.param(DEFAULT, {}, None, {}, DEFAULT_GLOBAL, ["repo1-cipher-type=aes-256-cbc", "repo1-type=s3"],
                     "dbtier", id="default"),
        pytest.param(DEFAULT, {}, PASSPHRASE, {}, ["repo1-cipher-type=aes-256-cbc", f"repo1-cipher-pass={PASSPHRASE}"],
                     [], "dbtier", id="default-encrypted"),
        pytest.param(
            S3_SPEC, {2: S3}, None, {},
            ["repo1-path=/var/lib/dbtier/backups", "repo2-type=s3", "repo2-path=/dbtier", "repo2-s3-bucket=dbtier-bkp",
             "repo2-s3-endpoint=minio.lan", "repo2-s3-region=eu-west-1", "repo2-s3-uri-style=path",
             "repo2-storage-port=9000", "repo2-storage-ca-file=/etc/ssl/minio.pem", "repo2-storage-verify-tls=n",
             "repo2-s3-key=AKIA-SECRET-ID", "repo2-s3-key-secret=very-secret-key"],
            ["repo1-cipher-type=aes-256-cbc", "repo2-cipher-type=aes-256-cbc"], "dbtier", id="fs-and-s3",
        ),
        pytest.param(
            S3_SPEC, {2: S3_VERIFIED}, None, {},
            ["repo2-type=s3", "repo2-storage-port=443", "repo2-s3-uri-style=host"],
            ["repo2-storage-verify-tls=n"], "dbtier", id="s3-verified-no-ca",
        ),
        pytest.param(
            S3_SPEC, {2: S3}, PASSPHRASE, {},
            ["repo1-cipher-type=aes-256-cbc", f"repo1-cipher-pass={PASSPHRASE}", "repo2-cipher-type=aes-256-cbc",
             f"repo2-cipher-pass={PASSPHRASE}"], [], "dbtier", id="fs-and-s3-encrypted",
        ),
        pytest.param(
            DEFAULT, {}, None, {"home": "/var/lib/dbtier/restored/pgbackrest", "stanza": "src"},
            ["log-path=/var/lib/dbtier/restored/pgbackrest/log", "lock-path=/var/lib/dbtier/restored/pgbackrest/lock",
             "spool-path=/var/lib/dbtier/restored/pgbackrest/spool"],
            [f"log-path={HOME}/log", f"lock-path={HOME}/lock", f"spool-path={HOME}/spool"], "src", id="home-and-stanza",
        ),
        pytest.param(
            build_spec({"backup": {"compress_type": "lz4", "process_max": 8, "archive_timeout_s": 30,
                                   "repositories": [{"type": "fs", "path": "/mnt/backups/"}]}}, environ={}),
            {}, None, {}, ["repo1-path=/mnt/backups", "compress-type=lz4", "process-max=8", "archive-timeout=60"], [],
            "dbtier", id="custom-settings",
        ),
    ],
)
def test_render_config(spec: ClusterSpec, s3: dict[int, S3Target], cipher: str | None, kwargs: dict[str, str],
                       present: list[str], absent: list[str], stanza_name: str) -> None:
    text = render_config(spec, pg_members(spec)[0], s3, cipher, **kwargs)
    parts = sections(text)
    assert list(parts) == ["global", stanza_name]
    for line in present:
        assert line in parts["global"], line
    for line in absent:
        assert line not in parts["global"], line
    assert parts[stanza_name] == STANZA_LINES
    repos = len(spec.backup.repositories)
    assert sum(line.endswith("-cipher-type=aes-256-cbc") for line in parts["global"]) == (repos if cipher else 0)
    assert sum("-cipher-pass=" in line for line in parts["global"]) == (repos if cipher else 0)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(S3, id="s3-target"),
        pytest.param(BackupSecrets(s3={2: S3}, cipher_pass=PASSPHRASE), id="backup-secrets"),
        pytest.param(BackupSecrets(s3={2: S3_VERIFIED, 3: S3}), id="backup-secrets-unencrypted"),
    ],
)
def test_secret_holders_never_show_secrets(value: object) -> None:
    for text in (repr(value), str(value), f"{value}", repr([value])):
        for secret in ("AKIA-SECRET-ID", "very-secret-key", PASSPHRASE):
            assert secret not in text


@pytest.mark.parametrize("index", [0, 1, 2])
def test_archive_and_restore_commands_name_their_member(index: int) -> None:
    member = pg_members(DEFAULT)[index]
    head = [PGBACKREST, f"--config={CONFIG}", "--stanza=dbtier", f"--pg1-path=/var/lib/dbtier/dbtier/pg{index}/pgdata"]
    push, get = archive_command(DEFAULT, member), restore_command(DEFAULT, member)
    assert push.endswith(" archive-push %p")
    assert get.endswith(' archive-get %f "%p"')
    assert shlex.split(push) == [*head, "archive-push", "%p"]
    assert shlex.split(get) == [*head, "archive-get", "%f", "%p"]


def pg_options(n: int, index: int) -> list[str]:
    base = f"/var/lib/dbtier/dbtier/pg{index}"
    return [f"--pg{n}-path={base}/pgdata", f"--pg{n}-port={5432 + index}", f"--pg{n}-socket-path={base}/run",
            f"--pg{n}-user=postgres"]


@pytest.mark.parametrize(
    ("primary", "standby", "kind", "repo", "argv"),
    [
        pytest.param(0, None, "full", 1, [*pg_options(1, 0), "--type=full", "--repo=1", "backup"], id="primary-only"),
        pytest.param(2, None, "incr", 2, [*pg_options(1, 2), "--type=incr", "--repo=2", "backup"], id="other-primary"),
        pytest.param(0, 1, "diff", 2, [*pg_options(1, 0), *pg_options(2, 1), "--backup-standby", "--type=diff",
                                       "--repo=2", "backup"], id="with-standby"),
    ],
)
def test_backup_argv(primary: int, standby: int | None, kind: str, repo: int, argv: list[str]) -> None:
    members = pg_members(DEFAULT)
    got = backup_argv(DEFAULT, members[primary], kind, repo, None if standby is None else members[standby])
    assert got == [PGBACKREST, f"--config={CONFIG}", "--stanza=dbtier", *argv]


@pytest.mark.parametrize(
    ("member", "command", "options", "tail"),
    [
        pytest.param(None, "info", ("--output=json",), ["--output=json", "info"], id="info-no-member"),
        pytest.param(0, "stanza-create", (), [*pg_options(1, 0), "stanza-create"], id="stanza-create-member"),
        pytest.param(1, "check", (), [*pg_options(1, 1), "check"], id="check-member-1"),
        pytest.param(None, "expire", ("--repo=2", "--repo2-retention-full=3"),
                     ["--repo=2", "--repo2-retention-full=3", "expire"], id="expire-options"),
    ],
)
def test_command_argv(member: int | None, command: str, options: tuple[str, ...], tail: list[str]) -> None:
    chosen = None if member is None else pg_members(DEFAULT)[member]
    assert command_argv(DEFAULT, chosen, command, *options) == [PGBACKREST, f"--config={CONFIG}", "--stanza=dbtier",
                                                                 *tail]


@pytest.mark.parametrize(
    ("repo", "keep_full", "keep_diff", "options"),
    [
        pytest.param(1, 2, 7, ["--repo=1", "--repo1-retention-full=2", "--repo1-retention-diff=7"], id="repo1"),
        pytest.param(2, 3, 1, ["--repo=2", "--repo2-retention-full=3", "--repo2-retention-diff=1"], id="repo2"),
    ],
)
def test_expire_options(repo: int, keep_full: int, keep_diff: int, options: list[str]) -> None:
    assert expire_options(repo, keep_full, keep_diff) == options


SOURCE_CONF = "/var/lib/dbtier/restored/pgbackrest/source.conf"


def restored_spec(options: list[str], timeout_s: float = 900) -> ClusterSpec:
    return with_restore_from(derive_target(DEFAULT, "restored", 100), DEFAULT, SOURCE_CONF, options, timeout_s)


@pytest.mark.parametrize(
    ("index", "options"),
    [
        pytest.param(0, [], id="latest-member-0"),
        pytest.param(1, ["--repo=2", "--type=time", "--target=2026-11-26 01:02:03+00:00", "--target-action=promote"],
                     id="time-with-space-member-1"),
        pytest.param(2, ["--type=name", "--target=it's \"here\"; rm -rf /", "--target-action=promote"],
                     id="name-with-quotes-member-2"),
    ],
)
def test_restore_bootstrap_command(index: int, options: list[str]) -> None:
    spec = restored_spec(options)
    member = pg_members(spec)[index]
    data_dir = f"/var/lib/dbtier/restored/pg{index}/pgdata"
    assert member.data_dir == data_dir
    shell, flag, script = shlex.split(restore_bootstrap_command(spec, member))
    assert (shell, flag) == ("/bin/sh", "-c")
    assert shlex.split(script) == [
        "mkdir", "-p", "-m", "0700", data_dir, "&&", "exec", PGBACKREST, f"--config={SOURCE_CONF}", "--stanza=dbtier",
        f"--pg1-path={data_dir}", "--log-level-console=info", *options, "restore",
    ]


@pytest.mark.parametrize(
    ("password", "line"),
    [
        pytest.param("plain", "*:*:*:postgres:plain", id="plain"),
        pytest.param("a:b", "*:*:*:postgres:a\\:b", id="colon"),
        pytest.param("a\\b", "*:*:*:postgres:a\\\\b", id="backslash"),
        pytest.param("\\:", "*:*:*:postgres:\\\\\\:", id="backslash-then-colon"),
        pytest.param("::", "*:*:*:postgres:\\:\\:", id="two-colons"),
    ],
)
def test_pgpass_line(password: str, line: str) -> None:
    assert pgpass_line(password) == line


# ---- patroni.yml --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("restoring", "index"),
    [
        pytest.param(False, 0, id="initdb-member-0"),
        pytest.param(False, 2, id="initdb-member-2"),
        pytest.param(True, 0, id="restore-member-0"),
        pytest.param(True, 1, id="restore-member-1"),
    ],
)
def test_patroni_config_archiving_and_bootstrap(restoring: bool, index: int) -> None:
    spec = restored_spec(["--type=immediate"]) if restoring else DEFAULT
    member = pg_members(spec)[index]
    config = render_patroni_config(spec, member, PASSWORDS)
    dcs_params = config["bootstrap"]["dcs"]["postgresql"]["parameters"]
    assert (dcs_params["archive_mode"], dcs_params["archive_timeout"]) == ("on", 60)
    local = config["postgresql"]
    assert local["parameters"]["archive_command"] == archive_command(spec, member)
    assert f"--pg1-path={member.data_dir}" in local["parameters"]["archive_command"]
    assert f"--stanza={spec.name}" in local["parameters"]["archive_command"]
    assert local["recovery_conf"]["restore_command"] == restore_command(spec, member)
    assert "archive_command" not in dcs_params
    bootstrap = config["bootstrap"]
    if restoring:
        assert bootstrap["method"] == "dbtier_restore"
        assert "initdb" not in bootstrap
        custom = bootstrap["dbtier_restore"]
        assert custom["keep_existing_recovery_conf"] is True
        assert custom["no_params"] is True
        assert custom["command"] == restore_bootstrap_command(spec, member)
    else:
        assert "method" not in bootstrap
        assert "data-checksums" in bootstrap["initdb"]


def test_patroni_config_of_the_drill_copy_does_not_archive() -> None:
    spec = throwaway_spec(DEFAULT)
    config = render_patroni_config(spec, pg_members(spec)[0], PASSWORDS)
    assert config["bootstrap"]["dcs"]["postgresql"]["parameters"]["archive_mode"] == "off"
    assert config["bootstrap"]["dcs"]["synchronous_mode"] is False


# ---- restore specs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "offset", "ports"),
    [
        pytest.param("restored", 100, (5532, 8108, 2479), id="offset-100"),
        pytest.param("dbtier-copy", 1, (5433, 8009, 2380), id="offset-1"),
        pytest.param("restored", 0, (5432, 8008, 2379), id="offset-0"),
    ],
)
def test_derive_target(name: str, offset: int, ports: tuple[int, int, int]) -> None:
    source = with_restore_from(build_spec({"name": "source"}, environ={}), DEFAULT, SOURCE_CONF, [], 900)
    target = derive_target(source, name, offset)
    assert target.name == name
    assert (target.pg.ports.postgres, target.pg.ports.patroni, target.pg.ports.etcd) == ports
    assert target.restore_from is None
    assert (target.members, target.data_root, target.backup) == (source.members, source.data_root, source.backup)


@pytest.mark.parametrize(
    ("name", "offset", "words"),
    [
        pytest.param("dbtier", 100, "target name: 'dbtier' is the source's own name", id="same-name"),
        pytest.param("restored", 62000, "postgres.ports.postgres", id="ports-past-the-range"),
        pytest.param("Restored_1", 100, "name:", id="invalid-name"),
    ],
)
def test_derive_target_refuses(name: str, offset: int, words: str) -> None:
    with pytest.raises(SpecError, match="restore target spec|source's own name") as err:
        derive_target(DEFAULT, name, offset)
    assert words in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("fields", "name", "postgres_port"),
    [
        pytest.param({}, "dbtier-drill", 5732, id="default"),
        pytest.param({"name": "orders", "members": 5, "synchronous_mode": True,
                      "postgresql_parameters": {"archive_mode": "on", "work_mem": "8MB"},
                      "backup": {"restore_drill": {"port_offset": 500}}}, "orders-drill", 5932, id="five-members-sync"),
        pytest.param({"name": "a" * 32}, "a" * 25 + "-drill", 5732, id="long-name-truncated"),
        pytest.param({"name": "a" * 24 + "-bcdefg"}, "a" * 24 + "--drill", 5732, id="truncated-at-a-dash"),
        pytest.param(
            {"name": "abcdefghijklmnopqrstuvwxy-drill"}, "abcdefghijklmnopqrstuvwxy--copy", 5732,
            id="31-char-name-ending-in-drill",
        ),
    ],
)
def test_throwaway_spec(fields: dict[str, Any], name: str, postgres_port: int) -> None:
    source = build_spec(fields, environ={})
    copy = throwaway_spec(source)
    assert copy.name == name
    assert copy.name != source.name
    assert (copy.members, copy.pg.etcd_size(copy.members), copy.pg.synchronous_mode) == (1, 1, False)
    assert copy.pg.postgresql_parameters["archive_mode"] == "off"
    assert copy.pg.ports.postgres == postgres_port
    assert {k: v for k, v in copy.pg.postgresql_parameters.items() if k != "archive_mode"} == {
        k: v for k, v in source.pg.postgresql_parameters.items() if k != "archive_mode"}


@pytest.mark.parametrize(
    ("healthy", "timeout_s", "expected"),
    [
        pytest.param(180, 900, 900, id="raised-to-timeout"),
        pytest.param(180, 60, 180, id="kept-when-larger"),
        pytest.param(180, 180, 180, id="equal"),
    ],
)
def test_with_restore_from_raises_healthy_timeout(healthy: int, timeout_s: float, expected: int) -> None:
    target = build_spec({"name": "restored", "timeouts": {"healthy": healthy},
                         "postgres": {"ports": {"postgres": 5532, "patroni": 8108, "etcd": 2479},
                                      "timeouts": {"etcd_quorum": 45}}}, environ={})
    spec = with_restore_from(target, DEFAULT, SOURCE_CONF, ["--set=20261126-010203F"], timeout_s)
    assert spec.timeouts.healthy == expected
    assert (spec.pg.timeouts.etcd_quorum, spec.timeouts.replica_read) == (45, 60)


def test_restore_from_round_trip() -> None:
    target = derive_target(DEFAULT, "restored", 100)
    options = ["--repo=2", "--type=lsn", "--target=0/3000028", "--target-action=promote"]
    spec = with_restore_from(target, DEFAULT, SOURCE_CONF, options, 1200)
    assert spec.restore_from is not None
    assert (spec.restore_from.cluster, spec.restore_from.config, spec.restore_from.options) == (
        "dbtier", SOURCE_CONF, options)
    plain = without_restore_from(spec)
    assert plain.restore_from is None
    assert plain.model_dump(exclude={"restore_from"}) == spec.model_dump(exclude={"restore_from"})
    assert plain.model_dump(exclude={"timeouts"}) == target.model_dump(exclude={"timeouts"})


# ---- backup settings through build_spec ---------------------------------------------------------

SSH_TWO_HOSTS = {"provider": "ssh", "ssh": {"hosts": [{"address": "10.0.0.1"}, {"address": "10.0.0.2"}],
                                            "key_file": "/root/.ssh/id_ed25519"}}
SSH_ONE_HOST = {"provider": "ssh", "ssh": {"hosts": [{"address": "10.0.0.1"}, {"address": "10.0.0.1", "port": 2222}],
                                           "key_file": "/root/.ssh/id_ed25519"}}
PROXMOX_PER_MEMBER = {"provider": "proxmox", "proxmox": {
    "credentials_block": "pve", "ssh_credentials_block": "key", "layout": "per-member",
    "containers": [{"vmid": 101 + i, "node": "pve", "address": f"10.0.0.{21 + i}/24"} for i in range(3)]}}
FS, FS_SHARED, S3_REPO = {"type": "fs"}, {"type": "fs", "shared": True, "path": "/mnt/nfs/pg"}, {"type": "s3", "block": "b"}


def with_repos(base: dict[str, Any], *repos: dict[str, Any], members: int | None = None) -> dict[str, Any]:
    out = {**base, "backup": {"repositories": list(repos)}}
    if members is not None:
        out["members"] = members
    return out


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param(with_repos(SSH_TWO_HOSTS, FS_SHARED), id="ssh-spread-fs-shared"),
        pytest.param(with_repos(SSH_TWO_HOSTS, S3_REPO), id="ssh-spread-s3"),
        pytest.param(with_repos(SSH_TWO_HOSTS, FS, members=1), id="ssh-spread-one-member"),
        pytest.param(with_repos(SSH_ONE_HOST, FS), id="ssh-one-address"),
        pytest.param(with_repos(PROXMOX_PER_MEMBER, S3_REPO, FS_SHARED), id="proxmox-per-member-s3-and-shared"),
        pytest.param(with_repos({}, FS, S3_REPO, {"type": "s3", "block": "c", "path": "/x/"}), id="local-fs-and-two-s3"),
    ],
)
def test_backup_settings_accepted(fields: dict[str, Any]) -> None:
    spec = build_spec(fields, environ={})
    assert len(spec.backup.repositories) == len(fields["backup"]["repositories"])


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        pytest.param(with_repos(SSH_TWO_HOSTS, FS), "backup.repositories.0: an fs repository on members spread",
                     id="ssh-spread-fs"),
        pytest.param(with_repos(SSH_TWO_HOSTS, S3_REPO, FS), "backup.repositories.1: an fs repository",
                     id="ssh-spread-fs-second"),
        pytest.param(with_repos(PROXMOX_PER_MEMBER, FS), "backup.repositories.0: an fs repository",
                     id="proxmox-per-member-fs"),
        pytest.param(with_repos({}, {"type": "s3", "block": "b", "path": "dbtier"}), "must start with /",
                     id="s3-relative-path"),
        pytest.param(with_repos({}, {"type": "fs", "path": "backups"}), "must be an absolute path",
                     id="fs-relative-path"),
        pytest.param(with_repos({}, FS, FS_SHARED), "at most one fs repository", id="two-fs"),
        pytest.param(with_repos({}), "backup.repositories", id="no-repository"),
        pytest.param(with_repos({}, {"type": "s3"}), "backup.repositories.0.s3.block", id="s3-without-block"),
        pytest.param(with_repos({}, {"type": "nfs"}), "backup.repositories.0", id="unknown-repo-type"),
        pytest.param({"backup": {"bogus": 1}}, "backup.bogus: is not a known field", id="unknown-backup-field"),
        pytest.param({"backup": {"compress_type": "xz"}}, "backup.compress_type", id="unknown-compress-type"),
    ],
)
def test_backup_settings_refused(fields: dict[str, Any], words: str) -> None:
    with pytest.raises(SpecError) as err:
        build_spec(fields, environ={})
    assert words in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("path", "stored"),
    [
        pytest.param("/dbtier/", "/dbtier", id="trailing-slash-dropped"),
        pytest.param("/", "/", id="root-kept"),
    ],
)
def test_s3_path_normalised(path: str, stored: str) -> None:
    spec = build_spec(with_repos({}, {"type": "s3", "block": "b", "path": path}), environ={})
    assert spec.backup.repositories[0].path == stored


# ---- restore drill verdict ----------------------------------------------------------------------

MARKER = Marker("d1", before=100, after=10, at=NOW)


def copy(before: int = 100, after: int = 0, amcheck_ok: bool = True, query_ok: bool = True) -> CopyChecks:
    amcheck = "amcheck: " + ("3 B-tree indexes consistent" if amcheck_ok else "failed: index corrupt")
    query = "check query: " + ("returned true" if query_ok else "returned False, not true")
    return CopyChecks(before, after, ((amcheck, amcheck_ok), (query, query_ok)))


@pytest.mark.parametrize(
    ("checks", "expect", "restore_s", "passed", "words"),
    [
        pytest.param(copy(), "marker", 12.0, True, "100 of 100 written before the target, 0 of 10 written after it",
                     id="marker-exact"),
        pytest.param(copy(after=10), "marker", 12.0, False, "(expected 100 and 0)", id="marker-holds-later-rows"),
        pytest.param(copy(before=99), "marker", 12.0, False, "(expected 100 and 0)", id="marker-lost-rows"),
        pytest.param(copy(after=10), "latest", 12.0, True, "10 of 10 written after it", id="latest-all-rows"),
        pytest.param(copy(after=3), "latest", 12.0, False, "(expected 100 and 10)", id="latest-missing-rows"),
        pytest.param(copy(before=0, after=0), "any", 12.0, True, "(not judged for this target)", id="any-not-judged"),
        pytest.param(copy(amcheck_ok=False), "marker", 12.0, False, "amcheck: failed: index corrupt",
                     id="amcheck-failure"),
        pytest.param(copy(query_ok=False), "marker", 12.0, False, "check query: returned False, not true",
                     id="query-failure"),
        pytest.param(copy(), "marker", 901.0, False, "restored and healthy in 901.0 s (budget 900 s)",
                     id="over-budget"),
        pytest.param(copy(), "marker", 900.0, True, "in 900.0 s", id="at-budget"),
        pytest.param(CopyChecks(100, 0, (("validate: 2 collections of database app valid", True),
                                         ("user app: could not read the markers through the copy's URI", False))),
                     "marker", 12.0, False, "user app: could not read", id="one-of-the-engines-checks-failed"),
    ],
)
def test_judge_copy(checks: CopyChecks, expect: str, restore_s: float, passed: bool, words: str) -> None:
    verdict = judge_copy(MARKER, checks, expect, restore_s, 900, [])
    assert verdict.passed is passed
    assert any(words in s for s in verdict.sentences), verdict.sentences
    assert len(verdict.sentences) == 4
    assert verdict.markdown("Restore drill", {"target": "marker"}).startswith(
        f"# Restore drill: {'PASSED' if passed else 'FAILED'}\n")
