"""What the MongoDB wire tests compare: a command as the client sent it to mockupdb."""

from __future__ import annotations

from typing import Any


def command_sent(doc: Any) -> dict[str, Any]:
    """The command as sent, without the driver's session and cluster fields (``lsid``, ``$db``, ``$clusterTime``).

    >>> command_sent({"replSetStepDown": 20, "lsid": {"id": 1}, "$db": "admin"})
    {'replSetStepDown': 20}
    """
    return {k: v for k, v in dict(doc).items() if not k.startswith("$") and k != "lsid"}
