"""Where the MongoDB programs of the integration suite are, and why it is skipped where they are not.

``DBTIER_TEST_MONGOD``, ``DBTIER_TEST_MONGODUMP`` and ``DBTIER_TEST_MONGORESTORE`` name the programs; each one
unset is looked up on PATH. The finder only checks that a file is there and executable (no program is run);
:func:`db_version` runs ``mongod --version`` once, for the summary line and the suite's fixture.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping

#: (program, the environment variable that names it), in the order messages list them.
TOOLS: tuple[tuple[str, str], ...] = (
    ("mongod", "DBTIER_TEST_MONGOD"),
    ("mongodump", "DBTIER_TEST_MONGODUMP"),
    ("mongorestore", "DBTIER_TEST_MONGORESTORE"),
)
HOW_TO_RUN = ("install MongoDB 7.0's server (mongod) and database tools (mongodump, mongorestore), or point "
              "DBTIER_TEST_MONGOD, DBTIER_TEST_MONGODUMP and DBTIER_TEST_MONGORESTORE at them")
SUITE = "MongoDB integration suite"
_VERSION = re.compile(r"db version (v\d+\.\d+\S*)")

Which = Callable[..., "str | None"]


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_tool(name: str, variable: str, environ: Mapping[str, str], which: Which = shutil.which) -> tuple[str | None, str]:
    """(absolute path or None, why it is missing: '' when found) of one program."""
    named = environ.get(variable)
    if named:
        if _executable(named):
            return os.path.abspath(named), ""
        return None, f"{variable}={named} is not an executable file"
    found = which(name, path=environ.get("PATH", ""))
    if found and _executable(found):
        return os.path.abspath(found), ""
    return None, f"{name} not on PATH and {variable} unset"


def _lookup(environ: Mapping[str, str] | None, which: Which) -> tuple[dict[str, str], list[str]]:
    env = os.environ if environ is None else environ
    found: dict[str, str] = {}
    missing: list[str] = []
    for name, variable in TOOLS:
        path, why = find_tool(name, variable, env, which)
        if path is None:
            missing.append(why)
        else:
            found[name] = path
    return found, missing


def mongo_binaries(environ: Mapping[str, str] | None = None, which: Which = shutil.which) -> dict[str, str] | None:
    """``{"mongod": path, "mongodump": path, "mongorestore": path}``, or None when any of them is missing."""
    found, missing = _lookup(environ, which)
    return None if missing else found


def skip_reason(environ: Mapping[str, str] | None = None, which: Which = shutil.which) -> str:
    """Why the suite is skipped: what is missing and how to run it ('' when nothing is missing)."""
    _, missing = _lookup(environ, which)
    return f"{'; '.join(missing)}: {HOW_TO_RUN}" if missing else ""


def parse_db_version(text: str) -> str | None:
    """
    >>> parse_db_version("db version v7.0.14\\nBuild Info: {...}")
    'v7.0.14'
    >>> parse_db_version("") is None
    True
    """
    match = _VERSION.search(text)
    return match.group(1) if match else None


def db_version(mongod: str, timeout: float = 20) -> tuple[str | None, str]:
    """(``vX.Y.Z`` or None, what ``mongod --version`` printed or why it could not run), bounded by ``timeout``."""
    try:
        done = subprocess.run([mongod, "--version"], capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as err:
        return None, f"{mongod} --version did not run ({err})"
    said = (done.stdout + done.stderr).strip()
    return parse_db_version(said), said.splitlines()[0][:160] if said else f"{mongod} --version printed nothing"


def summary_line(outcomes: Mapping[str, int], environ: Mapping[str, str] | None = None,
                 version_of: Callable[[str], tuple[str | None, str]] = db_version) -> str:
    """The one line ``make test`` shows about the suite, given how many of its tests ended how
    (``{"skipped": 12}``, ``{"passed": 10, "failed": 2}``); '' when none of its tests was in the run.

    >>> summary_line({"skipped": 3}, {"PATH": ""}).split(";")[0]
    'MongoDB integration suite: skipped (mongod not on PATH and DBTIER_TEST_MONGOD unset'
    >>> summary_line({}, {"PATH": ""})
    ''
    """
    if not any(outcomes.values()):
        return ""
    binaries = mongo_binaries(environ)
    ran = {k: v for k, v in outcomes.items() if k != "skipped" and v}
    if binaries is None or not ran:
        why = skip_reason(environ) or "every test of it was skipped"
        return f"{SUITE}: skipped ({why})"
    version, said = version_of(binaries["mongod"])
    counts = ", ".join(f"{n} {k}" for k, n in sorted(outcomes.items()) if n)
    where = f"db version {version}" if version else f"db version unknown: {said}"
    return f"{SUITE}: ran against {binaries['mongod']} ({where}): {counts}"
