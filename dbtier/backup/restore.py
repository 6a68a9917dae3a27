"""The specs a restore creates (pure): a new cluster beside the source, or a throwaway copy for the drill; and the
plan a checked restore follows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from dbtier.errors import SpecError
from dbtier.ports import DEFAULT_PORT_OFFSET
from dbtier.spec import ClusterSpec, engine_layout, format_validation_error

__all__ = ["DEFAULT_PORT_OFFSET", "RestorePlan", "derive_target", "source_config_path", "throwaway_spec",
           "with_restore_from", "without_restore_from"]


@dataclass(frozen=True)
class RestorePlan:
    """What a checked restore will do: restore ``requested`` (the target as the user gave it; ``described``, as
    the engine read it) from ``served_by`` into ``target``, in place or into a new cluster."""

    target: ClusterSpec
    requested: str
    described: str
    served_by: str
    in_place: bool

    @property
    def target_text(self) -> str:
        return self.described


def source_config_path(target: ClusterSpec) -> str:
    """Where the new cluster's hosts keep what reaches the source's repositories while it restores (0600).

    >>> source_config_path(ClusterSpec(name="orders"))
    '/var/lib/dbtier/orders/pgbackrest/source.conf'
    """
    return f"{target.backup_dir}/source.conf"


def _rebuild(spec: ClusterSpec, **changes: Any) -> ClusterSpec:
    data = spec.model_dump(mode="json")
    data.update(changes)
    try:
        return ClusterSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(f"restore target spec: {format_validation_error(err)}") from None


def derive_target(source: ClusterSpec, name: str, port_offset: int) -> ClusterSpec:
    """The source's spec under another name, every port moved by ``port_offset``, on the source's hosts
    (which stay the source's: ``hosts_of``), without the source's virtual IP.

    >>> t = derive_target(ClusterSpec(), "dbtier-restored", 100)
    >>> (t.name, t.pg.ports.postgres, t.pg.ports.patroni, t.pg.ports.etcd, t.data_root, t.host_owner)
    ('dbtier-restored', 5532, 8108, 2479, '/var/lib/dbtier', 'dbtier')
    """
    from dbtier.engines.base import get_engine

    if name == source.name:
        raise SpecError(f"target name: {name!r} is the source's own name; pick another (or restore --in-place)")
    target = _rebuild(source, name=name, **shifted_port_fields(source, port_offset), restore_from=None,
                      hosts_of=source.host_owner)
    return _rebuild(target, **get_engine(target).copy_changes(target))


def shifted_port_fields(spec: ClusterSpec, offset: int) -> dict[str, Any]:
    """The spec's section that holds its engine's ports, every port moved by ``offset``: the field the spec's engine
    lays its ports out from (:func:`dbtier.spec.engine_layout`: all of ``postgres.ports``, or ``mongodb.port``).

    >>> shifted_port_fields(ClusterSpec(engine="mongodb"), 100)["mongodb"]["port"]
    27117
    >>> shifted_port_fields(ClusterSpec(), 100)["postgres"]["ports"]["postgres"]
    5532
    """
    section, *inner = engine_layout(spec).base.split(".")
    top = spec.model_dump(mode="json")[section]
    node = top
    for part in inner[:-1]:
        node = node[part]
    leaf = node[inner[-1]]
    node[inner[-1]] = leaf + offset if isinstance(leaf, int) else {field: port + offset for field, port in leaf.items()}
    return {section: top}


def throwaway_spec(source: ClusterSpec) -> ClusterSpec:
    """The restore drill's copy: one member, ports moved by the drill's offset, and what the engine
    changes for a throwaway copy (:meth:`~dbtier.engines.base.Engine.throwaway_changes`: no archiving of its own).

    >>> t = throwaway_spec(ClusterSpec())
    >>> (t.name, t.members, t.pg.etcd_size(t.members), t.pg.ports.postgres, t.pg.postgresql_parameters["archive_mode"])
    ('dbtier-drill', 1, 1, 5732, 'off')
    >>> m = throwaway_spec(ClusterSpec(engine="mongodb"))
    >>> (m.members, m.mongo.port, m.mongo.oplog_archiving, m.postgres)
    (1, 27317, False, None)
    """
    from dbtier.engines.base import get_engine

    drill = source.backup.restore_drill
    name = f"{source.name[:25]}-drill"
    target = derive_target(source, name if name != source.name else f"{source.name[:26]}-copy", drill.port_offset)
    changes: dict[str, Any] = {"members": 1, **get_engine(target).throwaway_changes(target)}
    if target.proxmox is not None and target.proxmox.layout == "per-member":  # its one member: in the first one
        proxmox = target.proxmox.model_dump(mode="json")
        changes["proxmox"] = {**proxmox, "containers": proxmox["containers"][:1]}
    return _rebuild(target, **changes)


def with_restore_from(target: ClusterSpec, source: ClusterSpec, config: str, options: list[str], timeout_s: float) -> ClusterSpec:
    """``target`` set to bootstrap from ``source``'s backup (pgBackRest ``options``) within ``timeout_s``."""
    timeouts = {**target.timeouts.model_dump(), "healthy": int(max(target.timeouts.healthy, timeout_s))}
    return _rebuild(
        target,
        restore_from={"cluster": source.name, "config": config, "options": options},
        timeouts=timeouts,
    )


def without_restore_from(spec: ClusterSpec) -> ClusterSpec:
    """The restored cluster's spec as a normal dbtier cluster (what ``status`` and ``teardown`` take)."""
    return _rebuild(spec, restore_from=None)
