"""The published PVE API schema: which paths and methods exist, and which parameters they take.

Validation follows PVE's own JSONSchema checks closely enough that a wrong or missing
parameter fails here the way it would against a real cluster, with the same messages.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]  # dbtier/lab/pve/schema.py -> the checkout
SCHEMA_ENV = "PVE_API_SCHEMA"

UNKNOWN = "property is not defined in schema and the schema does not allow additional properties"
MISSING = "property is missing and it is not optional"
_INT_RE = re.compile(r"^[+-]?\d+$")
_NUM_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def schema_path() -> Path:
    """``$PVE_API_SCHEMA``, else ``shared/pve-api/apidata.json`` beside the repository."""
    override = os.environ.get(SCHEMA_ENV)
    return Path(override) if override else REPO_ROOT.parent / "shared" / "pve-api" / "apidata.json"


@dataclass(frozen=True)
class Endpoint:
    """One path template of the schema with its methods."""

    template: str
    pattern: re.Pattern[str]
    info: dict[str, Any]

    def method(self, verb: str) -> dict[str, Any] | None:
        found = self.info.get(verb)
        return found if isinstance(found, dict) else None


class Schema:
    """The endpoint index of one apidata.json."""

    def __init__(self, tree: list[dict[str, Any]]) -> None:
        self.endpoints: list[Endpoint] = []
        self._index(tree)
        # literal segments win over placeholders when two templates match one path
        self.endpoints.sort(key=lambda e: e.template.count("{"))

    def _index(self, nodes: list[dict[str, Any]]) -> None:
        for node in nodes:
            template = node["path"]
            regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
            self.endpoints.append(Endpoint(template, re.compile(f"^{regex}$"), node.get("info", {})))
            self._index(node.get("children", []))

    def match(self, path: str) -> tuple[Endpoint, dict[str, str]] | None:
        """The endpoint serving ``path`` (below /api2/json) and its path parameters."""
        for endpoint in self.endpoints:
            found = endpoint.pattern.match(path)
            if found:
                return endpoint, found.groupdict()
        return None


@lru_cache(maxsize=4)
def load_schema(path: str | None = None) -> Schema:
    """The schema at ``path`` (default: :func:`schema_path`), parsed once per process."""
    with open(path or schema_path(), encoding="utf-8") as handle:
        return Schema(json.load(handle))


def validate(method_info: dict[str, Any], params: dict[str, str]) -> dict[str, str]:
    """PVE's parameter errors for ``params`` (strings, as they arrive on the wire); empty when valid."""
    spec = method_info.get("parameters", {})
    props: dict[str, Any] = spec.get("properties", {})
    errors: dict[str, str] = {}
    for name, value in params.items():
        prop = property_for(props, name)
        if prop is None:
            if not spec.get("additionalProperties"):
                errors[name] = UNKNOWN
            continue
        problem = check_value(prop, value)
        if problem:
            errors[name] = problem
    for name, prop in props.items():
        if not prop.get("optional") and "[n]" not in name and name not in params:
            errors[name] = MISSING
    return errors


def property_for(props: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The schema of ``name``; ``net0`` is described by ``net[n]``."""
    if name in props:
        found: dict[str, Any] = props[name]
        return found
    indexed = re.match(r"^([a-z]+)(\d+)$", name)
    if indexed and f"{indexed.group(1)}[n]" in props:
        found = props[f"{indexed.group(1)}[n]"]
        return found
    return None


def check_value(prop: dict[str, Any], value: str) -> str | None:
    """The message for one bad value, or None."""
    kind = prop.get("type", "string")
    if kind == "integer" and not _INT_RE.match(value):
        return f"type check ('integer') failed - got '{value}'"
    if kind == "number" and not _NUM_RE.match(value):
        return f"type check ('number') failed - got '{value}'"
    if kind == "boolean" and value.lower() not in _TRUE | _FALSE:
        return f"type check ('boolean') failed - got '{value}'"
    if "enum" in prop and value not in prop["enum"]:
        return f"value '{value}' does not have a value in the enumeration '{', '.join(prop['enum'])}'"
    if kind in ("integer", "number"):
        return _check_range(prop, float(value))
    if "maxLength" in prop and len(value) > int(prop["maxLength"]):
        return f"value may only be {prop['maxLength']} characters long"
    if "minLength" in prop and len(value) < int(prop["minLength"]):
        return f"value must be at least {prop['minLength']} characters long"
    if isinstance(prop.get("format"), dict):
        return _check_property_string(prop["format"], value)
    return None


def _check_range(prop: dict[str, Any], number: float) -> str | None:
    if "minimum" in prop and number < float(prop["minimum"]):
        return f"value must have a minimum value of {prop['minimum']}"
    if "maximum" in prop and number > float(prop["maximum"]):
        return f"value must have a maximum value of {prop['maximum']}"
    return None


def _check_property_string(fmt: dict[str, Any], value: str) -> str | None:
    """Check ``key=value,key=value`` strings (net0, rootfs, features) against their format."""
    default_key = next((key for key, sub in fmt.items() if sub.get("default_key")), None)
    seen: dict[str, str] = {}
    for part in filter(None, value.split(",")):
        key, sep, item = part.partition("=")
        if not sep:
            if default_key is None or default_key in seen:
                return f"invalid format - format error: {part}: value without key"
            key, item = default_key, part
        if key not in fmt:
            return f"invalid format - format error: {key}: {UNKNOWN}"
        problem = check_value(fmt[key], item)
        if problem:
            return f"invalid format - format error: {key}: {problem}"
        seen[key] = item
    missing = [key for key, sub in fmt.items() if not sub.get("optional") and key not in seen]
    return f"invalid format - format error: {missing[0]}: {MISSING}" if missing else None
