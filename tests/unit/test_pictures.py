"""The pictures' series (tables) and the PNGs they make: valid images that carry what they mark."""

from __future__ import annotations

import base64
import io
from datetime import datetime, timedelta

import pytest
from PIL import Image

from dbtier import pictures
from dbtier.drills.verdict import Attempt, rto


def _failover(fault: float = 100.0) -> list[Attempt]:
    """Writes every 0.1 s: port 1 acknowledges until the fault, nothing for 3 s, then port 2 acknowledges."""
    log = []
    for i in range(100):
        sent = 95.0 + i * 0.1
        if sent < fault:
            log.append(Attempt(i, sent, sent + 0.01, True, 1, 1))
        elif sent < fault + 3.0:
            log.append(Attempt(i, sent, sent + 0.05, False, error="OperationalError"))
        else:
            log.append(Attempt(i, sent, sent + 0.02, True, 2, 2))
    return log


@pytest.mark.parametrize(("events", "leader_before", "change"), [
    ([(-1.0, "Patroni: leader pg0 (timeline 1)"), (2.0, "Patroni: leader pg1 (timeline 2)")], "pg0", 2.0),
    ([(0.5, "Patroni: no leader"), (2.5, "Patroni: leader pg0 (timeline 1), sync standby pg2")], "pg0", None),
    ([(1.0, "Patroni: leader pg10 (timeline 2)")], "pg1", 1.0),  # pg10 is not pg1
    ([], "pg0", None),
])
def test_the_leader_change_is_the_first_other_leader_after_the_fault(events: list[tuple[float, str]],
                                                                     leader_before: str, change: float | None) -> None:
    assert pictures.timeline_series(_failover(), 100.0, events, leader_before, 1).leader_change_s == change


@pytest.mark.parametrize(("not_port", "expected"), [(1, 3.02), (None, 3.02), (2, None)])
def test_the_first_acknowledgement_after_the_fault_is_the_verdicts_rto(not_port: int | None, expected: float | None) -> None:
    log = _failover()
    series = pictures.timeline_series(log, 100.0, [], "pg0", not_port)
    assert series.first_ack_after_s == expected
    measured = rto(log, 100.0, not_port)
    assert measured == (None if expected is None else pytest.approx(expected, abs=0.01))


def test_every_write_lands_in_one_bin() -> None:
    log = _failover()
    series = pictures.timeline_series(log, 100.0, [], "pg0", 1, bin_s=0.5)
    assert sum(series.acknowledged) == sum(a.ok for a in log) and sum(series.failed) == sum(not a.ok for a in log)
    last = max(a.done for a in log) - 100.0
    assert series.bins[0] <= -5.0 + 0.01 < series.bins[0] + 0.5 and series.bins[-1] <= last < series.bins[-1] + 0.5
    assert all(b2 - b1 == pytest.approx(0.5) for b1, b2 in zip(series.bins, series.bins[1:], strict=False))
    outage = [f for b, f in zip(series.bins, series.failed, strict=True) if 0 <= b < 3]
    assert outage == [5, 5, 5, 5, 5, 5]


@pytest.mark.parametrize(("samples", "expected"), [
    ([], {}),
    ([(99.0, {}), (101.0, {"pg1": 10})], {"pg1": ([1.0], [10])}),
    ([(99.5, {"pg2": 0, "pg1": 5}), (100.5, {"pg1": 7})], {"pg1": ([-0.5, 0.5], [5, 7]), "pg2": ([-0.5], [0])}),
])
def test_lag_series_per_member(samples: list[tuple[float, dict[str, int]]],
                               expected: dict[str, tuple[list[float], list[int]]]) -> None:
    assert pictures.lag_series(samples, 100.0) == expected


def _image(png: bytes) -> tuple[str | None, tuple[int, int]]:
    with Image.open(io.BytesIO(png)) as image:
        image.verify()
        return image.format, image.size


def test_the_timeline_png_is_an_image_that_carries_what_it_marks() -> None:
    log = _failover()
    series = pictures.timeline_series(log, 100.0, [(2.0, "Patroni: leader pg1 (timeline 2)")], "pg0", 1)
    png = pictures.timeline_png(series, "main: crash (passed)", rto(log, 100.0, 1))
    assert _image(png) == ("PNG", (900, 450))
    marks = pictures.png_text(png)
    assert marks["dbtier:kind"] == "timeline" and marks["dbtier:leader_change_s"] == "2.0"
    assert float(marks["dbtier:rto_s"]) == pytest.approx(3.02) and marks["dbtier:first_ack_after_s"] == "3.02"
    assert (int(marks["dbtier:acknowledged"]), int(marks["dbtier:failed"])) == (70, 30)


def test_an_empty_drill_and_no_rto_still_draw() -> None:
    png = pictures.timeline_png(pictures.timeline_series([], 0.0, [], None, None), "nothing written", None)
    assert _image(png)[0] == "PNG" and pictures.png_text(png)["dbtier:rto_s"] == ""
    lag = pictures.lag_png({}, "no replicas")
    assert _image(lag)[0] == "PNG" and pictures.png_text(lag)["dbtier:peak_lag_bytes"] == "0"


def test_the_lag_and_backup_pngs() -> None:
    lag = pictures.lag_png(pictures.lag_series([(99.0, {"pg1": 0, "pg2": 100}), (101.0, {"pg2": 9000})], 100.0), "lag")
    assert _image(lag)[0] == "PNG"
    assert pictures.png_text(lag)["dbtier:members"] == "pg1,pg2" and pictures.png_text(lag)["dbtier:peak_lag_bytes"] == "9000"
    start = datetime(2026, 12, 1, 2, 0)
    points = [pictures.BackupPoint("F2", "full", start + timedelta(days=1), 40 << 20, 12.0),
              pictures.BackupPoint("F1", "full", start, 30 << 20, 10.0),
              pictures.BackupPoint("I1", "incr", start + timedelta(days=1, hours=6), 2 << 20, 1.5)]
    png = pictures.backup_png(points, "backups")
    assert _image(png)[0] == "PNG" and pictures.png_text(png)["dbtier:labels"] == "F1,F2,I1"  # oldest first
    assert pictures.png_text(pictures.backup_png([], "none"))["dbtier:count"] == "0"


def test_the_data_url_holds_the_png_as_it_is() -> None:
    png = pictures.lag_png({}, "x")
    url = pictures.data_url(png)
    assert url.startswith("data:image/png;base64,") and base64.b64decode(url.split(",", 1)[1]) == png
    assert pictures.markdown_image(png, "**main**", "lag").endswith(f"![lag]({url})\n")
