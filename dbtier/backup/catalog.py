"""The backup catalog and the decisions taken on it (pure: data in, data out).

The catalog comes from ``pgbackrest info --output=json``. From it: which type tonight's backup
takes, what retention keeps, whether a restore target can be reached, and the artifact rows.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from dbtier.errors import BackupError, RestoreError

KINDS = ("full", "diff", "incr")


@dataclass(frozen=True)
class BackupRecord:
    """One backup set in one repository."""

    label: str
    kind: str
    repo: int
    start: datetime
    stop: datetime
    size: int
    repo_size: int
    wal_start: str | None
    wal_stop: str | None
    reference: tuple[str, ...] = ()
    error: bool = False

    @property
    def duration_s(self) -> float:
        return (self.stop - self.start).total_seconds()

    def row(self, verified: str = "") -> dict[str, Any]:
        """The catalog artifact's row (what a person reads first; the WAL range is in :meth:`wal_row`)."""
        return {
            "label": self.label,
            "type": self.kind,
            "repo": f"repo{self.repo}",
            "started": when(self.start),
            "took": f"{self.duration_s:.1f} s",
            "size": human_bytes(self.size),
            "stored": human_bytes(self.repo_size),
            "verified": verified or "not in this run",
        }

    def wal_row(self) -> dict[str, Any]:
        """The WAL a restore of this backup needs at least (the second catalog artifact)."""
        return {"label": self.label, "repo": f"repo{self.repo}", "WAL from": self.wal_start or "?",
                "WAL to": self.wal_stop or "?"}

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["start"] = self.start.isoformat()
        out["stop"] = self.stop.isoformat()
        return out


@dataclass(frozen=True)
class Catalog:
    """Every backup of a stanza, oldest first, and the WAL range each repository holds."""

    stanza: str
    backups: tuple[BackupRecord, ...]
    wal_min: str | None
    wal_max: str | None
    status: str

    def in_repo(self, repo: int) -> list[BackupRecord]:
        return [b for b in self.backups if b.repo == repo]

    def label(self, label: str) -> BackupRecord | None:
        return next((b for b in self.backups if b.label == label), None)


def _ts(epoch: int | float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


def parse_info(doc: list[dict[str, Any]], stanza: str) -> Catalog:
    """The catalog of ``stanza`` from ``pgbackrest info --output=json``.

    >>> cat = parse_info([{"name": "s", "status": {"message": "ok"}, "archive": [{"min": "A", "max": "B"}],
    ...   "backup": [{"label": "L", "type": "full", "timestamp": {"start": 0, "stop": 5},
    ...   "database": {"repo-key": 1}, "info": {"size": 10, "repository": {"delta": 3}},
    ...   "archive": {"start": "A", "stop": "A"}}]}], "s")
    >>> (cat.backups[0].label, cat.backups[0].duration_s, cat.wal_max, cat.status)
    ('L', 5.0, 'B', 'ok')
    """
    entry = next((s for s in doc if s.get("name") == stanza), None)
    if entry is None:
        return Catalog(stanza, (), None, None, "missing stanza")
    records = []
    for item in entry.get("backup", []):
        info = item.get("info", {})
        archive = item.get("archive") or {}
        records.append(
            BackupRecord(
                label=item["label"],
                kind=item["type"],
                repo=int((item.get("database") or {}).get("repo-key", 1)),
                start=_ts(item["timestamp"]["start"]),
                stop=_ts(item["timestamp"]["stop"]),
                size=int(info.get("size", 0)),
                repo_size=int((info.get("repository") or {}).get("delta", 0)),
                wal_start=archive.get("start"),
                wal_stop=archive.get("stop"),
                reference=tuple(item.get("reference") or ()),
                error=bool(item.get("error", False)),
            )
        )
    records.sort(key=lambda b: (b.stop, b.label))
    archives = entry.get("archive") or []
    mins = [a["min"] for a in archives if a.get("min")]
    maxes = [a["max"] for a in archives if a.get("max")]
    return Catalog(
        stanza=stanza,
        backups=tuple(records),
        wal_min=min(mins) if mins else None,
        wal_max=max(maxes) if maxes else None,
        status=str((entry.get("status") or {}).get("message", "")),
    )


def kind_refusal(field: str, engine: str, kinds: tuple[str, ...], kind: str) -> str | None:
    """The one-line refusal of a backup ``kind`` the engine does not take (None: it takes it, or ``auto``), the same
    from the command line (``--kind``) and from a flow run (``kind``).

    >>> kind_refusal("--kind", "mongodb", ("full",), "diff")
    '--kind diff: engine mongodb takes auto, full backups; pass one of them'
    >>> kind_refusal("kind", "postgres", ("full", "diff", "incr"), "incr") is None
    True
    """
    if kind == "auto" or kind in kinds:
        return None
    return f"{field} {kind}: engine {engine} takes {', '.join(('auto', *kinds))} backups; pass one of them"


def choose_kind(requested: str, backups: list[BackupRecord], now: datetime, full_every_days: float) -> tuple[str, str]:
    """The backup type to take and why: ``auto`` takes a full when none is recent enough, else a differential.

    >>> t = datetime(2026, 11, 26, tzinfo=timezone.utc)
    >>> choose_kind("auto", [], t, 7)
    ('full', 'no full backup yet')
    >>> choose_kind("incr", [], t, 7)
    ('incr', 'asked for incr')
    """
    if requested != "auto":
        if requested not in KINDS:
            raise BackupError(f"kind: {requested!r} is not a backup type; use auto, full, diff or incr")
        return requested, f"asked for {requested}"
    fulls = [b for b in backups if b.kind == "full" and not b.error]
    if not fulls:
        return "full", "no full backup yet"
    age = now - fulls[-1].stop
    if age >= timedelta(days=full_every_days):
        return "full", f"the newest full ({fulls[-1].label}) is {age.days} day(s) old (full_every_days {full_every_days:g})"
    return "diff", f"the newest full ({fulls[-1].label}) is {age.total_seconds() / 3600:.1f} h old"


def fulls_to_keep(backups: list[BackupRecord], keep_full: int, window_days: float, now: datetime) -> int:
    """How many full backups expire keeps: ``keep_full``, or more when the window needs an older one.

    Any second of the last ``window_days`` must stay restorable, so the newest full that ended
    before the window's start is kept too.

    >>> t = datetime(2026, 11, 26, tzinfo=timezone.utc)
    >>> def full(days_ago): return BackupRecord(f"F{days_ago}", "full", 1, t - timedelta(days=days_ago),
    ...     t - timedelta(days=days_ago), 0, 0, None, None)
    >>> fulls_to_keep([full(20), full(10), full(3), full(1)], 2, 7, t)
    3
    >>> fulls_to_keep([full(20), full(10), full(3), full(1)], 2, 0, t)
    2
    >>> fulls_to_keep([full(3), full(1)], 5, 7, t)
    5
    """
    fulls = [b for b in backups if b.kind == "full" and not b.error]
    window_start = now - timedelta(days=window_days)
    needed = keep_full
    if window_days > 0:
        older = [i for i, b in enumerate(fulls) if b.stop <= window_start]
        # Keep from the newest full that ended before the window; when none did, every full is inside it.
        needed = max(needed, len(fulls) - older[-1] if older else len(fulls))
    return needed


def expired_labels(before: list[BackupRecord], after: list[BackupRecord]) -> list[str]:
    """Labels present before expire and gone after it."""
    kept = {b.label for b in after}
    return [b.label for b in before if b.label not in kept]


def summarize(catalog: Catalog, now: datetime) -> str:
    """One line for ``dbtier status``: how many backups, the newest and its age, how far WAL is archived.

    >>> t = datetime(2026, 11, 26, 6, tzinfo=timezone.utc)
    >>> b = BackupRecord("20261126-020000F", "full", 1, t - timedelta(hours=4), t - timedelta(hours=4), 1, 1, None, None)
    >>> summarize(Catalog("s", (b,), "A", "000000010000000000000009", "ok"), t)
    'backups: 1, newest 20261126-020000F (full, repo1, 4.0 h ago); WAL archived up to 000000010000000000000009'
    >>> summarize(Catalog("s", (), None, None, "no valid backups"), t)
    'backups: none yet (no valid backups); WAL archived up to nothing yet'
    """
    wal = f"WAL archived up to {catalog.wal_max or 'nothing yet'}"
    usable = [b for b in catalog.backups if not b.error]
    if not usable:
        return f"backups: none yet ({catalog.status}); {wal}"
    newest = usable[-1]
    age_h = (now - newest.stop).total_seconds() / 3600
    return f"backups: {len(usable)}, newest {newest.label} ({newest.kind}, repo{newest.repo}, {age_h:.1f} h ago); {wal}"


def when(at: datetime) -> str:
    """A time as the restore command takes it.

    >>> when(datetime(2026, 11, 26, 1, 2, 3, 400000, tzinfo=timezone.utc))
    '2026-11-26 01:02:03+00'
    """
    return at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S+00")


def restorable_window(catalog: Catalog, last_archived: datetime | None = None) -> str:
    """The window a point-in-time restore can reach: from the end of the oldest usable backup to the last
    archived WAL (or the newest backup's end when that time is unknown), in the restore command's format.

    >>> t = datetime(2026, 11, 26, 2, tzinfo=timezone.utc)
    >>> b = [BackupRecord("20261126-020000F", "full", 1, t, t + timedelta(seconds=5), 1, 1, None, None),
    ...      BackupRecord("20261126-020000F_20261127-020000D", "diff", 1, t + timedelta(days=1),
    ...                   t + timedelta(days=1, seconds=3), 1, 1, None, None)]
    >>> restorable_window(Catalog("s", tuple(b), "A", "B", "ok"), t + timedelta(days=1, hours=3))
    'restorable from 2026-11-26 02:00:05+00 (end of 20261126-020000F) to 2026-11-27 05:00:00+00 (last archived WAL)'
    >>> restorable_window(Catalog("s", tuple(b), "A", "B", "ok"))
    'restorable from 2026-11-26 02:00:05+00 (end of 20261126-020000F) to at least 2026-11-27 02:00:03+00 (end of the newest backup)'
    >>> restorable_window(Catalog("s", (), None, None, "no valid backups"))
    'nothing restorable yet (no valid backups)'
    """
    usable = [b for b in catalog.backups if not b.error]
    if not usable:
        return f"nothing restorable yet ({catalog.status or 'no backup'})"
    oldest, newest = usable[0], usable[-1]
    start = f"restorable from {when(oldest.stop)} (end of {oldest.label})"
    if last_archived is not None and last_archived >= newest.stop:
        return f"{start} to {when(last_archived)} (last archived WAL)"
    return f"{start} to at least {when(newest.stop)} (end of the newest backup)"


def catalog_description(cluster: str, catalog: Catalog, taken: list[str], expired: list[str],
                        last_archived: datetime | None) -> str:
    """The catalog artifact's description: the restorable window first, then what this run changed.

    >>> t = datetime(2026, 11, 26, 2, tzinfo=timezone.utc)
    >>> b = BackupRecord("20261126-020000F", "full", 1, t, t + timedelta(seconds=5), 10, 2048, "A", "A")
    >>> print(catalog_description("orders", Catalog("orders", (b,), "A", "B", "ok"), [b.label], [], None))
    **orders**: restorable from 2026-11-26 02:00:05+00 (end of 20261126-020000F) to at least 2026-11-26 02:00:05+00 (end of the newest backup).
    <BLANKLINE>
    This run took 20261126-020000F and expired nothing; 1 backup(s), 2.0 KiB in the repositories. The WAL each backup needs: artifact orders-backups-wal.
    """
    total = sum(b.repo_size for b in catalog.backups)
    return (f"**{cluster}**: {restorable_window(catalog, last_archived)}.\n\n"
            f"This run took {', '.join(taken) or 'nothing'} and expired {', '.join(expired) or 'nothing'}; "
            f"{len(catalog.backups)} backup(s), {human_bytes(total)} in the repositories. "
            f"The WAL each backup needs: artifact {cluster}-backups-wal.")


# ---- restore targets ----------------------------------------------------------------------------

LSN_RE = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")
LABEL_RE = re.compile(r"^\d{8}-\d{6}F(_\d{8}-\d{6}[DI])?$")


@dataclass(frozen=True)
class RestoreTarget:
    """Where recovery stops: ``latest``, a ``time``, an ``lsn``, a restore point ``name``, or a backup ``set``."""

    kind: str
    value: str = ""
    at: datetime | None = None

    def describe(self) -> str:
        return "latest" if self.kind == "latest" else f"{self.kind} {self.value}"


def parse_target(text: str) -> RestoreTarget:
    """Read a target as a user types it.

    >>> parse_target("latest")
    RestoreTarget(kind='latest', value='', at=None)
    >>> parse_target("2026-11-26 01:02:03+00").at.isoformat()
    '2026-11-26T01:02:03+00:00'
    >>> parse_target("lsn:0/3000028").value
    '0/3000028'
    >>> parse_target("name:before-migration").kind
    'name'
    >>> parse_target("20261126-010203F").kind
    'set'
    """
    text = text.strip()
    if text in ("", "latest"):
        return RestoreTarget("latest")
    if text.startswith("lsn:"):
        lsn = text[4:]
        if not LSN_RE.match(lsn):
            raise RestoreError(f"target: {lsn!r} is not an LSN; write it like lsn:0/3000028")
        return RestoreTarget("lsn", lsn.upper())
    if text.startswith("name:"):
        name = text[5:]
        if not name or len(name) > 63:
            raise RestoreError("target: a restore point name is 1-63 characters; write it like name:before-migration")
        return RestoreTarget("name", name)
    if text.startswith("set:") or LABEL_RE.match(text):
        return RestoreTarget("set", text.removeprefix("set:"))
    try:
        at = datetime.fromisoformat(text.replace(" ", "T", 1) if "T" not in text else text)
    except ValueError:
        raise RestoreError(
            f"target: {text!r} is not latest, a time (2026-11-26 01:02:03+00), lsn:X/Y, name:P or a backup label"
        ) from None
    if at.tzinfo is None:
        raise RestoreError(f"target: {text!r} has no time zone; add one, e.g. {text}+00")
    return RestoreTarget("time", at.isoformat(sep=" "), at.astimezone(timezone.utc))


def check_target(target: RestoreTarget, catalog: Catalog, now: datetime) -> str:
    """Refuse a target no backup can reach, in one line; else say which backup serves it."""
    usable = [b for b in catalog.backups if not b.error]
    if not usable:
        raise RestoreError(f"stanza {catalog.stanza}: no backup to restore from ({catalog.status}); run the backup flow first")
    if target.kind == "set":
        if target.value not in {b.label for b in usable}:
            known = ", ".join(b.label for b in usable[-3:])
            raise RestoreError(f"target: no backup labelled {target.value!r} in stanza {catalog.stanza}; newest: {known}")
        return f"backup {target.value}"
    if target.kind == "time":
        assert target.at is not None
        if target.at > now:
            raise RestoreError(f"target: {target.value} is in the future (now {now.isoformat(sep=' ', timespec='seconds')})")
        oldest = usable[0]
        if target.at < oldest.stop:
            raise RestoreError(
                f"target: {target.value} is before the oldest backup ends "
                f"({oldest.label}, {oldest.stop.isoformat(sep=' ', timespec='seconds')}); pick a later time"
            )
        return f"backup {base_for_time(catalog, target.at).label} + WAL up to {target.value}"
    return f"backup {usable[-1].label} + WAL ({target.describe()})"


def base_for_time(catalog: Catalog, at: datetime) -> BackupRecord:
    """The newest usable backup that ended by ``at`` (the one pgBackRest restores for a time target);
    ``check_target`` has made sure there is one."""
    return [b for b in catalog.backups if not b.error and b.stop <= at][-1]


def restore_options(target: RestoreTarget, repo: int | None = None) -> list[str]:
    """pgBackRest restore options for ``target`` (the recovery ends in a promotion).

    >>> restore_options(parse_target("lsn:0/3000028"))
    ['--type=lsn', '--target=0/3000028', '--target-action=promote']
    >>> restore_options(parse_target("latest"), repo=2)
    ['--repo=2']
    >>> restore_options(RestoreTarget("end", "20261202-005000F"))   # a backup to the end of its archive
    ['--set=20261202-005000F']
    """
    options = [f"--repo={repo}"] if repo else []
    if target.kind == "latest":
        return options
    if target.kind == "end":
        return [*options, f"--set={target.value}"]
    if target.kind == "set":
        return [*options, f"--set={target.value}", "--type=immediate", "--target-action=promote"]
    return [*options, f"--type={target.kind}", f"--target={target.value}", "--target-action=promote"]


def human_bytes(n: int) -> str:
    """
    >>> human_bytes(0), human_bytes(1536), human_bytes(172 * 1024 * 1024)
    ('0 B', '1.5 KiB', '172.0 MiB')
    """
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover
