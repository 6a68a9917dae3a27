"""The work directory: the files dbtier keeps for itself on the machine that runs it, never on a member.

Where: ``$DBTIER_WORK_DIR``, else ``$XDG_STATE_HOME/dbtier``, else ``~/.local/state/dbtier``. What::

    <work>/<cluster>/drills/<id>/   a failover drill's evidence: writes.jsonl (the writer's log), writer.err,
                                    verdict.json
    <work>/<cluster>/host-keys.json SSH host keys pinned on first use, when a run has no Prefect (the flows pin
                                    in Prefect variables instead)
    <work>/<cluster>/ca.crt         the cluster CA's certificate, written by ``dbtier ca`` for clients (public)
    <work>/<cluster>/ca/            the cluster CA (ca.key 0600, ca.crt) when a run has no Prefect (the flows keep
                                    it in a Secret block and a variable instead)
    <work>/pve/<block>.yaml         the Proxmox API token of ``proxmox.credentials_block`` for runs without Prefect

A member's files (data, configs, pid and log files) are reached only through that member's Runner;
this directory is written with plain local file operations, owned by whoever runs dbtier, mode 0700.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping

from dbtier.errors import DbtierError

WORK_DIR_ENV = "DBTIER_WORK_DIR"


def work_root(environ: Mapping[str, str] | None = None, home: str | None = None) -> str:
    """The work directory (not created here).

    >>> work_root({"DBTIER_WORK_DIR": "/srv/dbtier/", "XDG_STATE_HOME": "/x"})
    '/srv/dbtier'
    >>> work_root({"XDG_STATE_HOME": "/home/ops/.state"})
    '/home/ops/.state/dbtier'
    >>> work_root({"XDG_STATE_HOME": "relative/is/ignored"}, home="/root")
    '/root/.local/state/dbtier'
    >>> work_root({}, home="/root")
    '/root/.local/state/dbtier'
    """
    env = os.environ if environ is None else environ
    chosen = env.get(WORK_DIR_ENV, "").strip()
    if chosen:
        return os.path.abspath(os.path.expanduser(chosen))
    state = env.get("XDG_STATE_HOME", "").strip()
    if state.startswith("/"):  # the XDG spec: a relative path is invalid and ignored
        return os.path.join(os.path.normpath(state), "dbtier")
    return os.path.join(home or os.path.expanduser("~"), ".local", "state", "dbtier")


def cluster_work_dir(cluster: str, environ: Mapping[str, str] | None = None) -> str:
    """
    >>> cluster_work_dir("orders", {"DBTIER_WORK_DIR": "/w"})
    '/w/orders'
    """
    return os.path.join(work_root(environ), cluster)


def drill_dir(cluster: str, drill_id: str, environ: Mapping[str, str] | None = None) -> str:
    """Where one failover drill keeps its writer's log and verdict.

    >>> drill_dir("orders", "20261202T020003-crash", {"DBTIER_WORK_DIR": "/w"})
    '/w/orders/drills/20261202T020003-crash'
    """
    return os.path.join(cluster_work_dir(cluster, environ), "drills", drill_id)


def metrics_dir(cluster: str, environ: Mapping[str, str] | None = None) -> str:
    """Where the flows leave dbtier's own metrics for the monitoring stack's textfile collector.

    >>> metrics_dir("orders", {"DBTIER_WORK_DIR": "/w"})
    '/w/orders/metrics'
    """
    return os.path.join(cluster_work_dir(cluster, environ), "metrics")


def pin_file(cluster: str, environ: Mapping[str, str] | None = None) -> str:
    """
    >>> pin_file("orders", {"DBTIER_WORK_DIR": "/w"})
    '/w/orders/host-keys.json'
    """
    return os.path.join(cluster_work_dir(cluster, environ), "host-keys.json")


def ca_cert_file(cluster: str, environ: Mapping[str, str] | None = None) -> str:
    """
    >>> ca_cert_file("orders", {"DBTIER_WORK_DIR": "/w"})
    '/w/orders/ca.crt'
    """
    return os.path.join(cluster_work_dir(cluster, environ), "ca.crt")


def pve_token_file(block: str, environ: Mapping[str, str] | None = None) -> str:
    """
    >>> pve_token_file("lab-pve", {"DBTIER_WORK_DIR": "/w"})
    '/w/pve/lab-pve.yaml'
    """
    return os.path.join(work_root(environ), "pve", f"{block}.yaml")


# -- plain local file operations -------------------------------------------------------------------


def make_private_dir(path: str) -> str:
    """Create ``path`` and its missing parents, each mode 0700 (whatever the umask); return ``path``."""
    missing, head = [], os.path.abspath(path)
    while not os.path.isdir(head) and head != os.path.dirname(head):
        missing.append(head)
        head = os.path.dirname(head)
    try:
        for directory in reversed(missing):
            os.makedirs(directory, exist_ok=True)  # exist_ok: another drill of this process may have made it
            os.chmod(directory, 0o700)
    except OSError as err:
        raise DbtierError(f"work directory: cannot create {path} ({err.strerror}); set {WORK_DIR_ENV} to a "
                          "directory this user can write") from None
    return path


def write_private(path: str, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file renamed over it), with ``mode``."""
    directory = make_private_dir(os.path.dirname(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".dbtier-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_local(path: str) -> bytes | None:
    """The bytes of a file of the work directory, or None when it does not exist."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def forget_cluster(cluster: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Remove ``<work>/<cluster>/`` (drill evidence, pins of runs without Prefect); say so, or None when absent."""
    path = cluster_work_dir(cluster, environ)
    if not os.path.isdir(path):
        return None
    shutil.rmtree(path)
    return f"removed {path} on this machine (drill evidence)"
