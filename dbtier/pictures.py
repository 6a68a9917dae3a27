"""Pictures where people would rather look than read: a failover drill's timeline and replication lag, and the
backup history. PNG bytes from matplotlib's Agg backend (no display), saved beside the verdicts and published as
Prefect markdown artifacts that show them inline (:func:`markdown_image`).

The series are pure functions of the evidence (tested with tables); each PNG also carries the figures it marks as
PNG text chunks (``dbtier:*``, see :func:`png_text`), so a check can read what the picture shows without looking.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dbtier.drills.verdict import Attempt, first_ack_after


@dataclass(frozen=True)
class TimelineSeries:
    """A drill's writes per bin of ``bin_s`` seconds, relative to the fault (time zero)."""

    bins: list[float]  #: each bin's start
    acknowledged: list[int]
    failed: list[int]
    first_ack_after_s: float | None  #: the first acknowledgement after the fault (by a new primary), as plotted
    leader_change_s: float | None  #: when Patroni first named another leader


def timeline_series(attempts: Sequence[Attempt], fault_at: float, events: Sequence[tuple[float, str]],
                    leader_before: str | None, not_port: int | None, bin_s: float = 0.5) -> TimelineSeries:
    """Acknowledged and failed writes per bin (by when the writer heard back), relative to ``fault_at``; the first
    acknowledgement after the fault by a server other than ``not_port``; the first leader change Patroni reported.
    ``events`` are relative to the fault (the verdict's timeline).

    >>> log = [Attempt(1, 9.0, 9.1, True, 1), Attempt(2, 10.0, 12.0, False), Attempt(3, 12.1, 13.2, True, 2)]
    >>> s = timeline_series(log, 10.0, [(2.5, "Patroni: leader pg1 (timeline 2)")], "pg0", not_port=1, bin_s=1.0)
    >>> s.bins, s.acknowledged, s.failed, s.first_ack_after_s, s.leader_change_s
    ([-1.0, 0.0, 1.0, 2.0, 3.0], [1, 0, 0, 0, 1], [0, 0, 0, 1, 0], 3.2, 2.5)
    >>> timeline_series([], 10.0, [], None, None).bins
    []
    """
    if not attempts:
        return TimelineSeries([], [], [], None, None)
    import math

    first = min(a.done for a in attempts) - fault_at
    last = max(a.done for a in attempts) - fault_at
    start = math.floor(first / bin_s) * bin_s
    count = int(math.floor((last - start) / bin_s)) + 1
    acked, failed = [0] * count, [0] * count
    for a in attempts:
        index = min(count - 1, int((a.done - fault_at - start) // bin_s))
        (acked if a.ok else failed)[index] += 1
    after = first_ack_after(attempts, fault_at, not_port)
    change = next((t for t, what in events if t >= 0 and what.startswith("Patroni: leader ")
                   and not what.startswith(f"Patroni: leader {leader_before} ")), None)
    return TimelineSeries(bins=[round(start + i * bin_s, 3) for i in range(count)], acknowledged=acked, failed=failed,
                          first_ack_after_s=round(after.done - fault_at, 2) if after else None,
                          leader_change_s=change)


def lag_series(samples: Sequence[tuple[float, Mapping[str, int]]], fault_at: float
               ) -> dict[str, tuple[list[float], list[int]]]:
    """member -> (seconds relative to the fault, lag in bytes) from the drill's samples of Patroni's ``/cluster``.

    >>> lag_series([(9.0, {"pg1": 0, "pg2": 16}), (11.0, {"pg2": 4096})], 10.0)
    {'pg1': ([-1.0], [0]), 'pg2': ([-1.0, 1.0], [16, 4096])}
    """
    out: dict[str, tuple[list[float], list[int]]] = {}
    for moment, lags in samples:
        for name, lag in sorted(lags.items()):
            times, values = out.setdefault(name, ([], []))
            times.append(round(moment - fault_at, 3))
            values.append(lag)
    return out


def png_text(png: bytes) -> dict[str, str]:
    """The ``tEXt`` chunks of a PNG (what :func:`timeline_png` marks), keyword -> text; raises ValueError when
    ``png`` is not a PNG.

    >>> png_text(b"not a png")
    Traceback (most recent call last):
    ...
    ValueError: not a PNG image
    """
    import struct

    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("not a PNG image")
    out, at = {}, 8
    while at + 8 <= len(png):
        length, kind = struct.unpack(">I4s", png[at:at + 8])
        if kind == b"tEXt":
            key, _, text = png[at + 8:at + 8 + length].partition(b"\0")
            out[key.decode("latin-1")] = text.decode("latin-1")
        at += 12 + length
    return out


def data_url(png: bytes) -> str:
    """A PNG as a ``data:`` URL (what :func:`markdown_image` embeds).

    >>> data_url(b"\\x89PNG")
    'data:image/png;base64,iVBORw=='
    """
    return "data:image/png;base64," + base64.b64encode(png).decode()


def markdown_image(png: bytes, headline: str, alt: str) -> str:
    """A markdown artifact's text that shows the picture inline in the Prefect UI (its markdown renders ``data:``
    images; an image artifact would also print the whole URL under the picture).

    >>> markdown_image(b"PNG", "**main**: backups", "backup history")
    '**main**: backups\\n\\n![backup history](data:image/png;base64,UE5H)\\n'
    """
    return f"{headline}\n\n![{alt}]({data_url(png)})\n"


def _figure(width: float = 9.0, height: float = 4.5) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(figure: Any, marks: Mapping[str, object]) -> bytes:
    buffer = io.BytesIO()
    metadata = {f"dbtier:{k}": "" if v is None else str(v) for k, v in marks.items()}
    figure.savefig(buffer, format="png", metadata={"Software": "dbtier", **metadata})
    return buffer.getvalue()


def timeline_png(series: TimelineSeries, title: str, rto_s: float | None) -> bytes:
    """The drill's timeline: acknowledged (green) and failed (red) writes per bin, the fault at zero, the leader
    change, and the RTO the verdict measured shaded from the fault to the first acknowledgement after it."""
    figure = _figure()
    axes = figure.add_subplot()
    width = series.bins[1] - series.bins[0] if len(series.bins) > 1 else 0.5
    axes.bar(series.bins, series.acknowledged, width=width, align="edge", color="#2e7d32", label="acknowledged")
    axes.bar(series.bins, [-f for f in series.failed], width=width, align="edge", color="#c62828",
             label="failed or timed out")
    axes.axhline(0, color="#555555", linewidth=0.6)
    axes.axvline(0, color="#000000", linestyle="--", linewidth=1.2, label="fault")
    if rto_s is not None:
        axes.axvspan(0, rto_s, color="#ffb300", alpha=0.25, label=f"RTO {rto_s:.2f} s")
    if series.leader_change_s is not None:
        axes.axvline(series.leader_change_s, color="#1565c0", linewidth=1.2,
                     label=f"leader change (+{series.leader_change_s:.2f} s)")
    axes.set_xlabel("seconds from the fault")
    axes.set_ylabel(f"writes per {width:g} s (failed below zero)")
    axes.set_title(title)
    axes.legend(loc="lower left", fontsize="small")
    return _png(figure, {"kind": "timeline", "rto_s": rto_s, "first_ack_after_s": series.first_ack_after_s,
                         "leader_change_s": series.leader_change_s, "acknowledged": sum(series.acknowledged),
                         "failed": sum(series.failed)})


def lag_png(series: Mapping[str, tuple[list[float], list[int]]], title: str) -> bytes:
    """Each replica's lag behind the leader (bytes, as Patroni reports it) over the drill, the fault at zero."""
    figure = _figure()
    axes = figure.add_subplot()
    for name, (times, values) in sorted(series.items()):
        axes.step(times, values, where="post", label=name)
    axes.axvline(0, color="#000000", linestyle="--", linewidth=1.2, label="fault")
    axes.set_xlabel("seconds from the fault")
    axes.set_ylabel("replication lag (bytes)")
    axes.set_title(title)
    if series:
        axes.legend(loc="upper left", fontsize="small")
    else:
        axes.text(0.5, 0.5, "no replica reported its lag", ha="center", transform=axes.transAxes)
    peak = max((max(v) for _, v in series.values() if v), default=0)
    return _png(figure, {"kind": "lag", "members": ",".join(sorted(series)), "peak_lag_bytes": peak})


@dataclass(frozen=True)
class BackupPoint:
    label: str
    kind: str
    start: datetime
    size: int
    duration_s: float


def backup_png(points: Sequence[BackupPoint], title: str) -> bytes:
    """The backup history: size (bars, MiB) and duration (line, seconds) of each backup, oldest first."""
    ordered = sorted(points, key=lambda p: p.start)
    figure = _figure()
    axes = figure.add_subplot()
    colors = {"full": "#1565c0", "diff": "#6a1b9a", "incr": "#00838f"}
    xs = list(range(len(ordered)))
    axes.bar(xs, [p.size / 2**20 for p in ordered], color=[colors.get(p.kind, "#555555") for p in ordered])
    axes.set_ylabel("size (MiB; full blue, diff purple, incr teal)")
    axes.set_xticks(xs, [f"{p.start:%m-%d %H:%M}\n{p.kind}" for p in ordered], fontsize="x-small")
    seconds = axes.twinx()
    seconds.plot(xs, [p.duration_s for p in ordered], color="#ef6c00", marker="o")
    seconds.set_ylabel("duration (s)", color="#ef6c00")
    axes.set_title(title)
    if not ordered:
        axes.text(0.5, 0.5, "no backup yet", ha="center", transform=axes.transAxes)
    return _png(figure, {"kind": "backups", "count": len(ordered), "labels": ",".join(p.label for p in ordered)})
