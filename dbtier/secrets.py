"""Cluster secrets: which exist (each engine declares its own), how their blocks are named, how they are made (pure).

Values live in Prefect Secret blocks (see ``blocks/``); in memory they travel in a :class:`Passwords`, whose repr
never shows them. Which roles a cluster has is its engine's :attr:`dbtier.engines.base.Engine.secret_roles`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dbtier.spec import ClusterSpec


def new_password() -> str:
    """A fresh URL-safe password of 32 characters (192 bits)."""
    return secrets.token_urlsafe(24)


_ROLE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class SecretRole:
    """One secret of a cluster: a password (block ``dbtier-<cluster>-<role>-password``) or another kind of
    secret such as a key file (block ``dbtier-<cluster>-<role>``).

    ``core``: made with the cluster; one missing on an initialised cluster is refused, since new values would
    lock the members out of each other (a role added later is made on the first provision that needs it).
    """

    name: str
    core: bool = False
    password: bool = True
    make: Callable[[], str] = field(default=new_password, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not _ROLE.match(self.name):
            raise ValueError(f"secret role {self.name!r}: lower-case letters, digits and _ only")

    def block(self, cluster: str) -> str:
        """
        >>> SecretRole("etcd_root").block("orders"), SecretRole("keyfile", password=False).block("orders")
        ('dbtier-orders-etcd-root-password', 'dbtier-orders-keyfile')
        """
        stem = f"dbtier-{cluster}-{self.name.replace('_', '-')}"  # block names take no underscore
        return f"{stem}-password" if self.password else stem


class Passwords:
    """A cluster's secrets by role name (``passwords.app``); immutable; its repr never shows a value.

    >>> pw = Passwords(app="s3cr3t", keyfile="k3y")
    >>> pw.app, pw.roles(), pw
    ('s3cr3t', ['app', 'keyfile'], Passwords(app='**********', keyfile='**********'))
    >>> pw.superuser
    Traceback (most recent call last):
    ...
    AttributeError: no superuser secret among this cluster's (app, keyfile)
    """

    __slots__ = ("_values",)
    _values: dict[str, str]

    def __init__(self, **values: str) -> None:
        object.__setattr__(self, "_values", dict(values))

    @classmethod
    def generate(cls, roles: Iterable[SecretRole]) -> Passwords:
        """A fresh value for every role (benchmarks and tests that keep no blocks)."""
        return cls(**{role.name: role.make() for role in roles})

    @classmethod
    def of(cls, values: Mapping[str, str]) -> Passwords:
        return cls(**values)

    def __getattr__(self, role: str) -> str:
        if role.startswith("_"):
            raise AttributeError(role)
        try:
            return self._values[role]
        except KeyError:
            raise AttributeError(f"no {role} secret among this cluster's ({', '.join(self._values)})") from None

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Passwords are immutable")

    def __getstate__(self) -> dict[str, str]:
        return dict(self._values)

    def __setstate__(self, state: dict[str, str]) -> None:
        object.__setattr__(self, "_values", dict(state))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Passwords) and other._values == self._values

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._values.items())))

    def __repr__(self) -> str:
        return "Passwords(" + ", ".join(f"{role}='**********'" for role in self._values) + ")"

    __str__ = __repr__

    def roles(self) -> list[str]:
        return list(self._values)

    def replace(self, **changes: str) -> Passwords:
        """These secrets with some changed (a role they lack is refused: a typo would test nothing).

        >>> Passwords(app="a", etcd="e").replace(etcd="wrong").etcd
        'wrong'
        >>> Passwords(app="a").replace(ap="x")
        Traceback (most recent call last):
        ...
        AttributeError: no ap secret among this cluster's (app)
        """
        for role in changes:
            getattr(self, role)
        return Passwords(**{**self._values, **changes})

    def values(self) -> list[str]:
        return list(self._values.values())


def secret_roles(spec: ClusterSpec) -> tuple[SecretRole, ...]:
    """The secrets of the spec's engine."""
    from dbtier.engines.base import get_engine  # the engines import this module

    return get_engine(spec).secret_roles


def role_names(spec: ClusterSpec) -> list[str]:
    return [role.name for role in secret_roles(spec)]


def block_name(spec: ClusterSpec, role: str) -> str:
    """
    >>> from dbtier.spec import ClusterSpec
    >>> block_name(ClusterSpec(name="orders"), "app")
    'dbtier-orders-app-password'
    >>> block_name(ClusterSpec(name="orders"), "etcd_root")
    'dbtier-orders-etcd-root-password'
    >>> block_name(ClusterSpec(name="orders"), "keyfile")
    Traceback (most recent call last):
    ...
    ValueError: role must be one of superuser, replication, rewind, app, monitoring, restapi, etcd_root, etcd, pgbouncer
    """
    roles = {r.name: r for r in secret_roles(spec)}
    if role not in roles:
        raise ValueError(f"role must be one of {', '.join(roles)}")
    return roles[role].block(spec.name)
