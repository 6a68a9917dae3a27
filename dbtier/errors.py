"""The one exception root of dbtier and its few children.

Every error a user can meet carries a message that fits on one line, names the
field or the thing at fault, and says what to do about it. Command failures
carry their evidence (argv, exit code, stdout, stderr) the way Barman's do.
"""

from __future__ import annotations

from collections.abc import Sequence


class DbtierError(Exception):
    """Root of every error dbtier raises on purpose."""

    exit_code = 1

    def one_line(self) -> str:
        """The message folded onto one line, as the command-line edge prints it."""
        return " ".join(str(self).split())


class SpecError(DbtierError):
    """The cluster spec is invalid: raised before any process starts."""

    exit_code = 2


class PreflightError(DbtierError):
    """The host refuses the spec: port in use, foreign data dir, missing binary."""

    exit_code = 2


class Refused(DbtierError):
    """A command refuses its input before its flow run starts (a repository the spec lacks, an unknown
    scenario, a production guard, a cluster already unhealthy): one line, nothing touched."""

    exit_code = 2


class ApiUnreachable(Refused):
    """The Prefect API the command was pointed at does not answer (it is part of the input)."""


class ClusterBusy(DbtierError):
    """Another run holds the cluster's lock (dbtier/lock.py): refused, nothing touched."""

    exit_code = 2


class ProvisionError(DbtierError):
    """A provisioning or bootstrap step failed."""


class ClusterUnhealthy(DbtierError):
    """The cluster did not reach (or lost) the healthy state."""


class ControlPlaneError(DbtierError):
    """Patroni's REST API or etcd refused a call dbtier made, or did not answer it (the member is named)."""


class SecretError(DbtierError):
    """A secret could not be read or stored."""


class BlockMissing(SecretError):
    """A cluster's block is not in the Prefect API asked (often the wrong API): refused, nothing created."""

    exit_code = 2


class CommandFailed(DbtierError):
    """A command exited non-zero. The argv never holds a secret by construction."""

    def __init__(self, argv: Sequence[str], rc: int, out: str = "", err: str = "") -> None:
        self.argv = list(argv)
        self.rc = rc
        self.out = out
        self.err = err
        tail = (err or out).strip().splitlines()
        detail = f": {tail[-1]}" if tail else ""
        super().__init__(f"command {self.argv[0]!r} exited {rc}{detail}")


class DrillFailed(DbtierError):
    """A failover drill's verdict failed: lost writes, split brain, RTO over budget, no rejoin."""


class BackupError(DbtierError):
    """A backup, archiving or repository step failed."""


class RestoreError(DbtierError):
    """A restore was refused (bad target, target cluster running) or failed."""

    exit_code = 2


class RestoreFailed(RestoreError):
    """An accepted restore did not come up (the backup could not be restored or recovered)."""

    exit_code = 1


class CertificateError(DbtierError):
    """A certificate or the cluster CA is unusable (not PEM, foreign, expired) or could not be made."""
