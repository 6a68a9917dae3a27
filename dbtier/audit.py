"""The ``audit:`` section of the cluster spec and the PostgreSQL parameters it renders (pure: no I/O).

pgaudit (Debian's ``postgresql-15-pgaudit``) is preloaded and logs the statement classes of
``audit.log`` (``ddl, role`` by default) as ``AUDIT:`` lines in each member's PostgreSQL log;
connections and disconnections are logged beside them. ``audit.enabled: false`` turns pgaudit off
(provision then drops its extension, whose event triggers would fail without the library).
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: pgaudit's statement classes (``pgaudit.log``); a class may be subtracted with a leading ``-``.
PGAUDIT_CLASSES = ("read", "write", "function", "role", "ddl", "misc", "misc_set", "all", "none")
PGAUDIT = "pgaudit"


class AuditSettings(BaseModel):
    """What each member's PostgreSQL log records about who did what."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="preload pgaudit and log the statement classes of `log`")
    log: str = Field("ddl, role", description="pgaudit.log: a comma-separated list of pgaudit classes")
    log_connections: bool = True
    log_disconnections: bool = True

    @field_validator("log")
    @classmethod
    def _classes(cls, value: str) -> str:
        bad = [word for word in split_classes(value) if word.lstrip("-").lower() not in PGAUDIT_CLASSES]
        if bad or not split_classes(value):
            what = f"{bad[0]!r} is not a pgaudit class" if bad else "names no pgaudit class"
            raise ValueError(
                f"{what} (got {value!r}); write a comma-separated list of {', '.join(PGAUDIT_CLASSES)} "
                "(e.g. 'ddl, role'), or set audit.enabled: false to turn audit off"
            )
        return value


def split_classes(value: str) -> list[str]:
    """
    >>> split_classes(" ddl, -misc ,,role")
    ['ddl', '-misc', 'role']
    """
    return [word.strip() for word in value.split(",") if word.strip()]


def merge_preload(current: object, wanted: str) -> str:
    """``shared_preload_libraries`` with ``wanted`` added after what is already there, each once.

    >>> merge_preload(None, "pgaudit"), merge_preload("pg_stat_statements", "pgaudit")
    ('pgaudit', 'pg_stat_statements,pgaudit')
    >>> merge_preload("pgaudit, auto_explain", "pgaudit")
    'pgaudit,auto_explain'
    """
    names = [name.strip().strip('"') for name in str(current or "").split(",") if name.strip()]
    if wanted not in names:
        names.append(wanted)
    return ",".join(names)


def audit_parameters(settings: AuditSettings, current: Mapping[str, object]) -> dict[str, str]:
    """The parameters ``settings`` adds to ``current`` (the parameters rendered so far, the spec's included).

    The spec's own ``postgresql_parameters`` keep the last word on everything but
    ``shared_preload_libraries``, which is merged: pgaudit joins the libraries the spec preloads.
    """
    params = {
        "log_connections": "on" if settings.log_connections else "off",
        "log_disconnections": "on" if settings.log_disconnections else "off",
    }
    if settings.enabled:
        params["shared_preload_libraries"] = merge_preload(current.get("shared_preload_libraries"), PGAUDIT)
        params[f"{PGAUDIT}.log"] = settings.log
    return {name: value for name, value in params.items() if name == "shared_preload_libraries" or name not in current}


def preloads_pgaudit(parameters: Mapping[str, object]) -> bool:
    """Whether rendered ``parameters`` load pgaudit (its extension may exist only then).

    >>> preloads_pgaudit({"shared_preload_libraries": "pg_stat_statements,pgaudit"}), preloads_pgaudit({})
    (True, False)
    """
    names = str(parameters.get("shared_preload_libraries") or "").split(",")
    return PGAUDIT in {name.strip().strip('"') for name in names}
