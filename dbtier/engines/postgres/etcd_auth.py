"""etcd's RBAC for one cluster, through etcd's JSON gateway: ``root``, the cluster's user and role, auth on.

Idempotent: what exists is kept, what is missing is made; an etcd whose auth is already on is entered as
``root``. Passwords travel only in request bodies, never in a URL, an argv or a message.
"""

from __future__ import annotations

import base64
from typing import Any

import requests

from dbtier.engines.postgres.control_plane import (
    Login,
    Permission,
    RbacPlan,
    etcd_base,
    http_session,
    etcd_login,
    etcd_root_login,
    rbac_plan,
)
from dbtier.errors import ControlPlaneError
from dbtier.secrets import Passwords, block_name
from dbtier.spec import ClusterSpec
from dbtier.engines.postgres.topology import EtcdMember, etcd_members

AUTH_NOT_ENABLED = "authentication is not enabled"
BAD_LOGIN = "invalid user ID or password"
ALREADY = "already exists"


class EtcdRefused(ControlPlaneError):
    """etcd answered a call with an error (its own message: never a password)."""

    def __init__(self, member: str, method: str, status: int, message: str) -> None:
        self.message = message
        super().__init__(f"etcd member {member}: {method} refused (HTTP {status}): {message}")


class EtcdUnreachable(ControlPlaneError):
    """An etcd member did not answer (down, or not listening where the spec says)."""


class Gateway:
    """One etcd member's ``/v3/`` JSON gateway, with a token once :meth:`login` succeeded."""

    def __init__(self, spec: ClusterSpec, member: EtcdMember, timeout: float = 5.0) -> None:
        self.spec, self.member, self.timeout = spec, member, timeout
        self.base = f"{etcd_base(spec, member)}/v3/"
        self.session = http_session(spec)

    def call(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self.session.post(self.base + method, json=body, timeout=self.timeout)
        except (requests.RequestException, OSError) as err:
            raise EtcdUnreachable(f"etcd member {self.member.name} ({self.member.host}:{self.member.client_port}): "
                                    f"{method} got no answer ({type(err).__name__}); is it running?") from None
        try:
            doc: dict[str, Any] = response.json()
        except ValueError:
            doc = {}
        if response.status_code != 200:
            message = str(doc.get("error") or doc.get("message") or " ".join(response.text.split())[:160])
            raise EtcdRefused(self.member.name, method, response.status_code, message)
        return doc

    def login(self, login: Login) -> None:
        doc = self.call("auth/authenticate", {"name": login.username, "password": login.password})
        self.session.headers["Authorization"] = str(doc["token"])


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str | None) -> str:
    return base64.b64decode(text or "").decode(errors="replace")


def permissions_of(role_doc: dict[str, Any]) -> set[Permission]:
    """The permissions in etcd's ``auth/role/get`` answer (``READ`` is the enum's zero: the JSON omits it).

    >>> sorted(permissions_of({"perm": [{"permType": "READWRITE", "key": "L2Ev", "range_end": "L2Ew"}]}))
    [Permission(key='/a/', range_end='/a0', perm='READWRITE')]
    """
    return {Permission(_unb64(p.get("key")), _unb64(p.get("range_end")), p.get("permType", "READ"))
            for p in role_doc.get("perm") or []}


def _tolerate(gateway: Gateway, method: str, body: dict[str, Any], benign: str) -> bool:
    """Call ``method``; True when it did something, False when etcd said ``benign`` (it was done already)."""
    try:
        gateway.call(method, body)
    except EtcdRefused as err:
        if benign not in err.message:
            raise
        return False
    return True


def enter(gateway: Gateway, spec: ClusterSpec, passwords: Passwords) -> bool:
    """Log in as ``root`` when etcd's auth is on (True), or find it off (False)."""
    try:
        gateway.login(etcd_root_login(passwords))
    except EtcdRefused as err:
        if AUTH_NOT_ENABLED in err.message:
            return False
        if BAD_LOGIN in err.message:
            raise ControlPlaneError(
                f"etcd member {gateway.member.name}: auth is on and root refuses the password of Secret block "
                f"{block_name(spec, 'etcd_root')}; restore that block's value (or the etcd data it was made with)"
            ) from None
        raise
    return True


def ensure_user(gateway: Gateway, login: Login, role: str, auth_on: bool) -> list[str]:
    """The user with its password and ``role``: made, or its password set when it does not log in."""
    said = []
    if _tolerate(gateway, "auth/user/add", {"name": login.username, "password": login.password}, ALREADY):
        said.append(f"user {login.username} created")
    elif not (auth_on and _logs_in(gateway, login)):
        gateway.call("auth/user/changepw", {"name": login.username, "password": login.password})
        said.append(f"user {login.username}'s password set")
    roles = gateway.call("auth/user/get", {"name": login.username}).get("roles") or []
    if role not in roles:
        gateway.call("auth/user/grant", {"user": login.username, "role": role})
        said.append(f"role {role} granted to {login.username}")
    return said


def _logs_in(gateway: Gateway, login: Login) -> bool:
    """True when ``login`` authenticates (on a gateway of its own: ``gateway`` keeps root's token)."""
    try:
        Gateway(gateway.spec, gateway.member, gateway.timeout).login(login)
    except EtcdRefused as err:
        if BAD_LOGIN in err.message:
            return False
        raise
    return True


def ensure_role(gateway: Gateway, role: str, wanted: tuple[Permission, ...]) -> list[str]:
    """The role with exactly the ``wanted`` key ranges (others revoked)."""
    said = [f"role {role} created"] if _tolerate(gateway, "auth/role/add", {"name": role}, ALREADY) else []
    if not wanted:
        return said
    have = permissions_of(gateway.call("auth/role/get", {"role": role}))
    for perm in sorted(set(wanted) - have, key=lambda p: p.key):
        gateway.call("auth/role/grant", {"name": role, "perm": {"permType": perm.perm, "key": _b64(perm.key),
                                                                 "range_end": _b64(perm.range_end)}})
        said.append(f"{perm.perm} on [{perm.key}, {perm.range_end}) granted to role {role}")
    for perm in sorted(have - set(wanted), key=lambda p: p.key):
        gateway.call("auth/role/revoke", {"role": role, "key": _b64(perm.key), "range_end": _b64(perm.range_end)})
        said.append(f"[{perm.key}, {perm.range_end}) revoked from role {role}")
    return said


def apply_plan(gateway: Gateway, spec: ClusterSpec, plan: RbacPlan, passwords: Passwords) -> str:
    """Make etcd hold ``plan``, then turn auth on; one sentence says what changed."""
    auth_on = enter(gateway, spec, passwords)
    said = ensure_role(gateway, "root", ())
    said += ensure_user(gateway, etcd_root_login(passwords), "root", auth_on)
    said += ensure_role(gateway, plan.role, plan.permissions)
    said += ensure_user(gateway, etcd_login(spec, passwords), plan.role, auth_on)
    if not auth_on:
        gateway.call("auth/enable", {})
        said.append("auth enabled")
    scope = f"user {plan.user} reaches only {', '.join(p.key for p in plan.permissions)}"
    return f"etcd RBAC of {spec.name} (through {gateway.member.name}): " + (
        f"{'; '.join(said)}; {scope}" if said else f"already in place, auth on; {scope}")


def secure(spec: ClusterSpec, passwords: Passwords) -> str:
    """Apply the cluster's RBAC plan through the first etcd member that answers."""
    plan = rbac_plan(spec)
    errors: list[str] = []
    for member in etcd_members(spec):
        try:
            return apply_plan(Gateway(spec, member), spec, plan, passwords)
        except EtcdUnreachable as err:
            errors.append(str(err))
    raise ControlPlaneError(f"no etcd member of {spec.name} answered: {errors[0]}")
