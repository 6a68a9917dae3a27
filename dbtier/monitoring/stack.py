"""The monitoring stack of one cluster: Prometheus, Alertmanager and node exporter on the machine that runs the
flows, their configuration and their services (pure: spec in, files and argv out).

They run there because dbtier's own metrics are written there (:mod:`dbtier.monitoring.textfile`): node exporter
reads them with its textfile collector, beside this machine's own host metrics. Prometheus scrapes, with a
``cluster`` label on every target, what the engine names (:meth:`dbtier.engines.base.Engine.scrape_jobs`; for
PostgreSQL each member's Patroni ``/metrics``, each etcd member's ``/metrics``, each router's HAProxy ``/metrics``,
all over HTTPS verifying the cluster CA when TLS is on, and the exporters on the hosts) and that node exporter;
it loads :func:`dbtier.monitoring.alerts.alert_rules` and sends alerts to this Alertmanager, which posts them to
``monitoring.webhook_url`` (none: it keeps them, ``amtool`` and its UI show them). Files and data live in the
cluster's work directory (``<work>/<cluster>/monitoring``); processes are detached with pid files, run as the
user who runs dbtier.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from dbtier.engines.base import ScrapeJob, get_engine
from dbtier.monitoring.alerts import alert_rules
from dbtier.procs import Service
from dbtier.spec import ClusterSpec

#: Node exporter's collectors dbtier runs (its rules and dashboard read cpu, meminfo and filesystem; the others are
#: what an operator looks at next), every other one off: half its series and some of its memory.
NODE_COLLECTORS = ("cpu", "meminfo", "filesystem", "diskstats", "netdev", "loadavg", "pressure", "stat", "vmstat",
                   "time", "uname", "textfile")


def node_exporter_flags(textfile_dir: str | None) -> list[str]:
    """Node exporter's collector flags: :data:`NODE_COLLECTORS`, the textfile one reading ``textfile_dir`` (none:
    off, on member hosts where dbtier writes no metrics).

    >>> node_exporter_flags(None)[:2], "--collector.textfile" in node_exporter_flags(None)
    (['--collector.disable-defaults', '--collector.cpu'], False)
    >>> node_exporter_flags("/w/metrics")[-1]
    '--collector.textfile.directory=/w/metrics'
    """
    on = [c for c in NODE_COLLECTORS if c != "textfile" or textfile_dir]
    flags = ["--collector.disable-defaults", *(f"--collector.{c}" for c in on)]
    return flags + ([f"--collector.textfile.directory={textfile_dir}"] if textfile_dir else [])


#: The Go runtime of the stack's servers and exporters: garbage collected at a quarter of the default heap growth,
#: one processor's worth of threads and caches (they idle between scrapes): ~12 MiB less for ~0.1 % of a core on
#: the 3-member default (bench/monitoring.py).
GO_ENV = {"GOGC": "25", "GOMAXPROCS": "1"}


def host_node_exporters(spec: ClusterSpec, hosts: list[str]) -> list[Service]:
    """Node exporter on each of the cluster's ``hosts`` but the monitoring stack's own (which runs one already,
    with dbtier's metrics), on ``monitoring.exporters.node``, its files under ``<cluster_dir>/node-exporter``; none
    with ``monitoring.exporters.enabled`` off. Every engine's hosts get one (``make monitor``).

    >>> [(s.name, s.argv[1]) for s in host_node_exporters(ClusterSpec(), ["127.0.0.1", "10.0.0.5", "10.0.0.5"])]
    [('node-10.0.0.5', '--web.listen-address=10.0.0.5:9100')]
    """
    settings = spec.monitoring.exporters
    if not settings.enabled:
        return []
    found = []
    for host in dict.fromkeys(hosts):
        if host == spec.monitoring.host:
            continue
        where = f"{spec.cluster_dir}/node-exporter"
        argv = [spec.binaries.node_exporter, f"--web.listen-address={host}:{settings.node}", "--log.level=warn",
                *node_exporter_flags(None)]
        found.append(Service(name=f"node-{host}", kind="node-exporter", host=host, argv=argv,
                             pidfile=f"{where}/node-exporter.pid", logfile=f"{where}/node-exporter.log",
                             marker=argv[1], ports=[("monitoring.exporters.node", settings.node)], env=dict(GO_ENV)))
    return found

PROMETHEUS = "/usr/bin/prometheus"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"


@dataclass(frozen=True)
class StackPaths:
    root: str
    metrics: str  #: dbtier's own metrics (the textfile collector's directory)
    ca_file: str  #: the cluster CA, as this machine's clients trust it

    @property
    def prometheus_config(self) -> str:
        return f"{self.root}/prometheus.yml"

    @property
    def rules(self) -> str:
        return f"{self.root}/dbtier-alerts.yml"

    @property
    def alertmanager_config(self) -> str:
        return f"{self.root}/alertmanager.yml"


def scrape_jobs(spec: ClusterSpec) -> list[ScrapeJob]:
    """The engine's jobs (:meth:`dbtier.engines.base.Engine.scrape_jobs`) and this machine's node exporter, which
    joins the ``node`` job of the member hosts' own.

    >>> on = {"exporters": {"enabled": True}}
    >>> [(j.job, j.targets, j.tls) for j in scrape_jobs(ClusterSpec(members=1, etcd_members=1, routing={"enabled": True}, monitoring=on))]
    ... # doctest: +NORMALIZE_WHITESPACE
    [('patroni', ['127.0.0.1:8008'], True), ('etcd', ['127.0.0.1:2379'], True), ('haproxy', ['127.0.0.1:7000'], True),
     ('postgres', ['127.0.0.1:9187'], False), ('pgbouncer', ['127.0.0.1:6432'], False), ('node', ['127.0.0.1:9100'], False)]
    """
    mon = spec.monitoring
    own = f"{mon.host}:{mon.ports.node_exporter}"
    engine_jobs = get_engine(spec).scrape_jobs(spec)
    hosts = [t for j in engine_jobs if j.job == "node" for t in j.targets]
    return [*(j for j in engine_jobs if j.job != "node"), ScrapeJob("node", [own, *hosts], False)]


def targets(spec: ClusterSpec) -> dict[str, list[str]]:
    """job -> ``host:port`` of each target.

    >>> targets(ClusterSpec(routing={"enabled": True}))["patroni"], targets(ClusterSpec()).get("haproxy")
    (['127.0.0.1:8008', '127.0.0.1:8009', '127.0.0.1:8010'], None)
    """
    return {j.job: j.targets for j in scrape_jobs(spec)}


#: Dropped from every job: the Go runtime's own figures of each exporter and server (some 40 series a target).
COMMON_DROP = (r"go_.+",)
_KEEP_LABEL = "__tmp_dbtier_keep"


def metric_relabel(job: ScrapeJob) -> list[dict[str, Any]]:
    """The ``metric_relabel_configs`` that drop the job's (and :data:`COMMON_DROP`'s) names but its ``keep``'s.

    >>> rules = metric_relabel(ScrapeJob("postgres", [], False, drop=("pg_settings_.+",), keep=("pg_settings_max_connections",)))
    >>> [r.get("action", "replace") for r in rules], rules[1]["regex"]
    (['replace', 'drop', 'labeldrop'], '(go_.+|pg_settings_.+);')
    """
    rules: list[dict[str, Any]] = []
    if job.keep:
        rules.append({"source_labels": ["__name__"], "regex": "|".join(job.keep), "target_label": _KEEP_LABEL,
                      "replacement": "1"})
    rules.append({"source_labels": ["__name__", _KEEP_LABEL], "regex": f"({'|'.join((*COMMON_DROP, *job.drop))});",
                  "action": "drop"})
    if job.keep:
        rules.append({"regex": _KEEP_LABEL, "action": "labeldrop"})
    rules += [{"source_labels": [label], "regex": regex, "action": "drop"} for label, regex in job.drop_labels]
    return rules


def prometheus_config(spec: ClusterSpec, paths: StackPaths) -> dict[str, Any]:
    """prometheus.yml: one job per kind of target, TLS against the cluster CA where the target speaks it.

    >>> cfg = prometheus_config(ClusterSpec(), StackPaths("/w/m", "/w/metrics", "/w/ca.crt"))
    >>> [(j["job_name"], j["scheme"]) for j in cfg["scrape_configs"]]
    [('patroni', 'https'), ('etcd', 'https'), ('postgres', 'http'), ('node', 'http')]
    >>> cfg["scrape_configs"][0]["tls_config"], cfg["alerting"]["alertmanagers"][0]["static_configs"]
    ({'ca_file': '/w/ca.crt'}, [{'targets': ['127.0.0.1:9093']}])

    A job with ``via`` is scraped through that exporter, one target at a time, and each sample keeps its target
    as ``instance``:

    >>> routed = ClusterSpec(members=1, etcd_members=1, routing={"enabled": True}, monitoring={"exporters": {"enabled": True}})
    >>> bouncer = next(j for j in prometheus_config(routed, StackPaths("/w/m", "/w/metrics", "/w/ca.crt"))["scrape_configs"]
    ...                if j["job_name"] == "pgbouncer")
    >>> bouncer["static_configs"][0]["targets"], bouncer["relabel_configs"][-1]
    (['127.0.0.1:6432'], {'target_label': '__address__', 'replacement': '127.0.0.1:9127'})
    """
    mon = spec.monitoring
    jobs = []
    for job in scrape_jobs(spec):
        entry: dict[str, Any] = {"job_name": job.job, "scheme": "https" if job.tls else "http", "metrics_path": "/metrics",
                                 "static_configs": [{"targets": job.targets, "labels": {"cluster": spec.name}}]}
        if job.tls:
            entry["tls_config"] = {"ca_file": paths.ca_file}
        entry["metric_relabel_configs"] = metric_relabel(job)
        if job.via:
            entry["relabel_configs"] = [{"source_labels": ["__address__"], "target_label": "__param_target"},
                                        {"source_labels": ["__param_target"], "target_label": "instance"},
                                        {"target_label": "__address__", "replacement": job.via}]
        jobs.append(entry)
    return {
        "global": {"scrape_interval": f"{mon.scrape_interval_s}s", "evaluation_interval": f"{mon.evaluation_interval_s}s",
                   "external_labels": {"dbtier_cluster": spec.name}},
        "rule_files": [paths.rules],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"{mon.host}:{mon.ports.alertmanager}"]}]}]},
        "scrape_configs": jobs,
    }


def alertmanager_config(spec: ClusterSpec) -> dict[str, Any]:
    """alertmanager.yml: every alert of the cluster to the webhook (resolutions too), grouped by alert name.

    >>> alertmanager_config(ClusterSpec(monitoring={"webhook_url": "https://hooks.example/x"}))["receivers"]
    [{'name': 'webhook', 'webhook_configs': [{'url': 'https://hooks.example/x', 'send_resolved': True}]}]
    >>> alertmanager_config(ClusterSpec())["receivers"]
    [{'name': 'webhook'}]
    """
    url = spec.monitoring.webhook_url
    receiver: dict[str, Any] = {"name": "webhook"}
    if url:
        receiver["webhook_configs"] = [{"url": url, "send_resolved": True}]
    interval = spec.monitoring.evaluation_interval_s
    return {
        "route": {"receiver": "webhook", "group_by": ["alertname", "cluster"], "group_wait": f"{interval}s",
                  "group_interval": f"{2 * interval}s", "repeat_interval": "4h"},
        "receivers": [receiver],
    }


def stack_files(spec: ClusterSpec, paths: StackPaths) -> dict[str, str]:
    """path -> content of every file the stack reads."""
    import yaml

    return {
        paths.prometheus_config: yaml.safe_dump(prometheus_config(spec, paths), sort_keys=False),
        paths.rules: yaml.safe_dump(alert_rules(spec), sort_keys=False),
        paths.alertmanager_config: yaml.safe_dump(alertmanager_config(spec), sort_keys=False),
    }


def stack_services(spec: ClusterSpec, paths: StackPaths) -> list[Service]:
    """The engine's exporters beside the stack (:meth:`dbtier.engines.base.Engine.stack_services`), node exporter,
    Alertmanager, Prometheus: detached, each with its pid and log file under ``paths.root``.

    >>> [s.name for s in stack_services(ClusterSpec(), StackPaths("/w/m", "/w/metrics", "/w/ca.crt"))]
    ['node-exporter', 'alertmanager', 'prometheus']
    >>> [s.name for s in stack_services(ClusterSpec(routing={"enabled": True}, monitoring={"exporters": {"enabled": True}}),
    ...                                 StackPaths("/w/m", "/w/metrics", "/w/ca.crt"))][0]
    'pgbouncer-exporter'
    """
    mon, host = spec.monitoring, spec.monitoring.host

    def service(name: str, argv: list[str], port: int, marker: str) -> Service:
        return Service(name=name, kind=name, host=host, argv=argv, pidfile=f"{paths.root}/{name}.pid",
                       logfile=f"{paths.root}/{name}.log", marker=marker,
                       ports=[(f"monitoring.ports.{name.replace('-', '_')}", port)], env=dict(GO_ENV))

    node = service("node-exporter", [NODE_EXPORTER, f"--web.listen-address={host}:{mon.ports.node_exporter}",
                                     *node_exporter_flags(paths.metrics)],
                   mon.ports.node_exporter, f"--collector.textfile.directory={paths.metrics}")
    manager = service("alertmanager", [ALERTMANAGER, f"--config.file={paths.alertmanager_config}",
                                       f"--storage.path={paths.root}/alertmanager-data",
                                       f"--web.listen-address={host}:{mon.ports.alertmanager}",
                                       "--cluster.listen-address="],
                      mon.ports.alertmanager, f"--config.file={paths.alertmanager_config}")
    prometheus = service("prometheus", [PROMETHEUS, f"--config.file={paths.prometheus_config}",
                                        f"--storage.tsdb.path={paths.root}/prometheus-data",
                                        "--storage.tsdb.retention.time=15d",
                                        f"--web.listen-address={host}:{mon.ports.prometheus}",
                                        "--web.enable-lifecycle"],
                         mon.ports.prometheus, f"--config.file={paths.prometheus_config}")
    return [*get_engine(spec).stack_services(spec, paths.root), node, manager, prometheus]


def paths_for(spec: ClusterSpec, work_dir: str, ca_file: str) -> StackPaths:
    return StackPaths(root=os.path.join(work_dir, "monitoring"), metrics=os.path.join(work_dir, "metrics"),
                      ca_file=ca_file)
