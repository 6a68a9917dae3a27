"""What dbtier's own exporters share (PostgreSQL's PgBouncer exporter, MongoDB's member exporter): metric families
in Prometheus's text format, and one HTTP server answering ``/metrics?target=host:port`` for the targets of its
config only (the multi-target pattern). The standard library's, no client library: it would cost each exporter a
quarter more memory (measured on the PgBouncer exporter)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Metric:
    """One metric family: its name, ``counter`` or ``gauge``, its help and its samples (labels, value)."""

    name: str
    kind: str
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def exposition(metrics: Sequence[Metric]) -> bytes:
    """``metrics`` in Prometheus's text format (0.0.4).

    >>> print(exposition([Metric("x_up", "gauge", "1 when it answered", [({"db": 'a"b'}, 1.0)])]).decode(), end="")
    # HELP x_up 1 when it answered
    # TYPE x_up gauge
    x_up{db="a\\"b"} 1.0
    """
    lines = []
    for metric in metrics:
        lines += [f"# HELP {metric.name} {metric.help}", f"# TYPE {metric.name} {metric.kind}"]
        for labels, value in metric.samples:
            pairs = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items())
            lines.append(f"{metric.name}{{{pairs}}} {value!r}" if pairs else f"{metric.name} {value!r}")
    return ("\n".join(lines) + "\n").encode()


#: How long a scrape may take when Prometheus does not say (``X-Prometheus-Scrape-Timeout-Seconds``).
DEFAULT_SCRAPE_TIMEOUT_S = 10.0


def scrape_timeout(header: str | None) -> float:
    """The seconds Prometheus waits for this scrape (its header), the default without one.

    >>> scrape_timeout("2"), scrape_timeout(None), scrape_timeout("soon")
    (2.0, 10.0, 10.0)
    """
    try:
        return float(header) if header else DEFAULT_SCRAPE_TIMEOUT_S
    except ValueError:
        return DEFAULT_SCRAPE_TIMEOUT_S


def multi_target_handler(name: str, targets: Collection[str],
                         scrape: Callable[[str, float], Sequence[Metric]]) -> type[BaseHTTPRequestHandler]:
    """``GET /metrics?target=T`` answers ``scrape(T, seconds)`` for a T of ``targets`` (``seconds``: how long
    Prometheus waits for it: a member that does not answer must be ``up 0`` before that, not a failed scrape); any
    other target is a 400, any other path a 404. No access log (one line per scrape would fill it)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            url = urlsplit(self.path)
            target = (parse_qs(url.query).get("target") or [""])[0]
            if url.path != "/metrics":
                self._answer(404, f"dbtier {name}: GET /metrics?target=host:port\n".encode(), "text/plain")
            elif target not in targets:
                self._answer(400, f"unknown target {target!r}: one of {', '.join(targets)}\n".encode(), "text/plain")
            else:
                seconds = scrape_timeout(self.headers.get("X-Prometheus-Scrape-Timeout-Seconds"))
                self._answer(200, exposition(scrape(target, seconds)), "text/plain; version=0.0.4; charset=utf-8")

        def _answer(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
            return

    return Handler


def serve(listen: str, handler: type[BaseHTTPRequestHandler]) -> None:
    """Serve ``handler`` on ``HOST:PORT`` until interrupted (OSError/ValueError when it cannot bind)."""
    host, _, port = listen.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), handler)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
