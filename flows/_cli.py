"""The command-line edge shared by every ``python -m flows.<name>``: one line per error, a meaningful exit code."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager

from blocks.api import check_api, prefect_api
from dbtier.arguments import Parser
from dbtier.errors import DbtierError
from dbtier.spec import ClusterSpec, drill_copy_plan, load_spec, port_plan, restored_copy_plan
from flows._spec import WARNED, spec_warnings

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2


def spec_parser(description: str) -> argparse.ArgumentParser:
    """The parser every flow's command line starts from: ``--help`` shows defaults, a bad argument is one line."""
    parser = Parser(description=description)
    parser.add_argument("--spec", help="cluster spec YAML (default: deployments/clusters/default.yaml or $DBTIER_SPEC)")
    return parser


def run_edge(body: Callable[[ClusterSpec], int], spec_path: str | None) -> int:
    """Load the spec, run ``body``; turn a :class:`DbtierError` into one line on stderr and its exit code."""
    try:
        spec = load_spec(spec_path)
        for warning in spec_warnings(spec, spec_path):
            WARNED.add(warning)  # the flow run does not say it again
            print(f"dbtier: warning: {warning}", file=sys.stderr)
        keep_temporary_api_off(cluster_ports(spec))
        check_api()  # an API that does not answer is one line, before anything happens
        with run_tags_for(spec), prefect_api():
            return body(spec)
    except DbtierError as err:
        logging.getLogger("dbtier").debug("failure", exc_info=True)
        print(f"dbtier: error: {err.one_line()}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("dbtier: interrupted", file=sys.stderr)
        return 130


def run_tags_for(spec: ClusterSpec) -> AbstractContextManager[object]:
    """Every flow run started inside carries the tags ``dbtier`` and ``cluster:<name>`` (the runs list filters on them)."""
    from prefect import tags

    from flows._names import run_tags

    return tags(*run_tags(spec.name))


def cluster_ports(spec: ClusterSpec) -> set[int]:
    """The cluster's ports and those of the copies a restore or a restore drill makes of it by default.

    >>> sorted(p for p in cluster_ports(ClusterSpec(members=1)) if 8000 <= p < 9000)
    [8008, 8108, 8308]
    >>> sorted(cluster_ports(ClusterSpec(engine="mongodb", members=2)))
    [27017, 27018, 27117, 27118, 27317]
    """
    return {port for _, port in [*port_plan(spec), *restored_copy_plan(spec), *drill_copy_plan(spec)]}


def keep_temporary_api_off(ports: set[int]) -> None:
    """Without PREFECT_API_URL a flow run starts a temporary Prefect API on a random port of 8000-8999,
    where Patroni's REST ports live (8008...): keep it off the cluster's ports, or a preflight would
    find one of them taken by Prefect itself."""
    if os.environ.get("PREFECT_API_URL"):
        return
    try:
        from prefect.server.api.server import SubprocessASGIServer
    except ImportError:  # pragma: no cover - another Prefect layout: nothing to adjust
        return
    current = getattr(SubprocessASGIServer, "_port_range", None)
    if isinstance(current, range):
        SubprocessASGIServer._port_range = [p for p in current if p not in ports]  # type: ignore[assignment]
