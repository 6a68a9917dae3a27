"""Run the monitoring stack of a cluster on this machine: write its files, start or reload what changed, wait until
every target is up, stop it (the I/O side of :mod:`dbtier.monitoring.stack`)."""

from __future__ import annotations

import os
import pwd
import time
from typing import Any

from dbtier import procs, workdir
from dbtier.engines.base import get_engine
from dbtier.errors import DbtierError, PreflightError
from dbtier.monitoring.stack import StackPaths, paths_for, stack_files, stack_services
from dbtier.procs import Service
from dbtier.providers.local import LocalRunner
from dbtier.secrets import Passwords
from dbtier.spec import ClusterSpec


class MonitoringError(DbtierError):
    """The monitoring stack did not come up, or a target stayed down."""


def _runner(host: str = "127.0.0.1") -> LocalRunner:
    """This machine (at ``host``), as the user who runs dbtier (the stack reads that user's work directory)."""
    return LocalRunner(pwd.getpwuid(os.geteuid()).pw_name, host)


def stack_paths(spec: ClusterSpec) -> StackPaths:
    return paths_for(spec, workdir.cluster_work_dir(spec.name), workdir.ca_cert_file(spec.name))


def port_problems(spec: ClusterSpec) -> list[str]:
    """A port of a stack service that does not run but is taken by something else, one line each."""
    runner, paths = _runner(spec.monitoring.host), stack_paths(spec)
    return [f"{field}: {spec.monitoring.host}:{port} (for {service.name}) is already in use; choose another "
            f"port in monitoring.ports or stop what holds it"
            for service in stack_services(spec, paths) if procs.running_pid(runner, service) is None
            for field, port in service.ports if runner.port_in_use(port)]


def bring_up(spec: ClusterSpec, passwords: Passwords) -> list[str]:
    """Write the stack's files (and those of the engine's exporters beside it: the monitoring role's password);
    start what does not run; a running Prometheus or Alertmanager whose files changed reloads them
    (``POST /-/reload``), an exporter beside it restarts. One sentence per step."""
    import requests

    problems = port_problems(spec)
    if problems:
        raise PreflightError(problems[0])
    runner, paths = _runner(), stack_paths(spec)
    for directory in (paths.root, paths.metrics):
        workdir.make_private_dir(directory)
    changed = []
    files = {path: content.encode() for path, content in stack_files(spec, paths).items()}
    engine = get_engine(spec)
    beside = engine.stack_service_files(spec, paths.root, paths.ca_file, passwords)
    restart = {s.name for s in engine.stack_services(spec, paths.root)}
    for path, data in (files | beside).items():
        if workdir.read_local(path) != data:
            workdir.write_private(path, data)
            changed.append(path)
    exporters_changed = any(path in beside for path in changed)
    said = [f"wrote {', '.join(os.path.basename(p) for p in changed)} under {paths.root}" if changed
            else "monitoring files unchanged"]
    mon = spec.monitoring
    reload_ports = {"prometheus": mon.ports.prometheus, "alertmanager": mon.ports.alertmanager}
    for service in stack_services(spec, paths):
        pid = procs.running_pid(runner, service)
        if pid is not None and exporters_changed and service.name in restart:
            said.append(procs.stop(runner, service, timeout=30))  # it reads its files once, when it starts
            pid = None
        if pid is None:
            said.append(f"{service.name} started (pid {procs.start(runner, service, wait=15)})")
        elif changed and service.name in reload_ports:
            try:
                requests.post(f"http://{mon.host}:{reload_ports[service.name]}/-/reload", timeout=10).raise_for_status()
            except requests.RequestException as err:
                raise MonitoringError(f"{service.name} (pid {pid}) did not reload its files: {type(err).__name__}; "
                                      f"see {service.logfile}") from None
            said.append(f"{service.name} (pid {pid}) reloaded its files")
        else:
            said.append(f"{service.name} runs (pid {pid})")
    return said


def prometheus_api(spec: ClusterSpec, path: str, **params: Any) -> Any:
    """One call to this cluster's Prometheus HTTP API; its ``data``."""
    import requests

    url = f"http://{spec.monitoring.host}:{spec.monitoring.ports.prometheus}/api/v1/{path}"
    try:
        answer = requests.get(url, params=params, timeout=10)
        answer.raise_for_status()
    except requests.RequestException as err:
        raise MonitoringError(f"prometheus: {url} does not answer ({type(err).__name__}); see "
                              f"{stack_paths(spec).root}/prometheus.log") from None
    return answer.json()["data"]


def target_states(spec: ClusterSpec) -> list[tuple[str, str, str, str]]:
    """(job, instance, health, last error) of every active target."""
    return [(t["labels"].get("job", ""), t["labels"].get("instance", ""), t["health"], t.get("lastError", ""))
            for t in prometheus_api(spec, "targets", state="active")["activeTargets"]]


def wait_targets_up(spec: ClusterSpec, timeout: float) -> str:
    """Block until Prometheus has scraped every target successfully and loaded the rules; a sentence."""
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    while True:
        try:
            states = target_states(spec)
            rules = sum(len(g["rules"]) for g in prometheus_api(spec, "rules")["groups"])
        except MonitoringError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)  # Prometheus opens its port a few seconds after it starts (replaying its WAL)
            continue
        down = [s for s in states if s[2] != "up"]
        if states and not down and rules:
            jobs = sorted({s[0] for s in states})
            return (f"Prometheus scrapes {len(states)} targets, all up ({', '.join(jobs)}), and holds {rules} alert "
                    f"rules, after {time.monotonic() - started:.1f} s: http://{spec.monitoring.host}:"
                    f"{spec.monitoring.ports.prometheus}")
        if time.monotonic() > deadline:
            if down:
                job, instance, health, error = down[0]
                raise MonitoringError(f"target {job} {instance} is {health} after {timeout:.0f} s: {error or 'never scraped'}")
            raise MonitoringError(f"Prometheus has no target or no rule after {timeout:.0f} s; see its log")
        time.sleep(1)


def firing_alerts(spec: ClusterSpec) -> list[str]:
    """``alertname (labels)`` of every alert firing now, for status."""
    return [f"{a['labels'].get('alertname')} ({', '.join(f'{k}={v}' for k, v in sorted(a['labels'].items()) if k not in ('alertname', 'severity'))})"
            for a in prometheus_api(spec, "alerts")["alerts"] if a.get("state") == "firing"]


def stack_running(spec: ClusterSpec) -> list[Service]:
    runner = _runner()
    return [s for s in stack_services(spec, stack_paths(spec)) if procs.running_pid(runner, s) is not None]


def stop_stack(spec: ClusterSpec) -> list[str]:
    """Stop every stack process by its pid (Prometheus first, node exporter last); data kept."""
    runner = _runner()
    running = stack_running(spec)
    return [procs.stop(runner, s, timeout=30) for s in reversed(stack_services(spec, stack_paths(spec))) if s in running]
