"""The command-line edge shared by every ``python -m flows.<name>``: one line per error, a meaningful exit code."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from dbtier.errors import DbtierError
from dbtier.spec import ClusterSpec, load_spec

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2


def spec_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--spec", help="cluster spec YAML (default: deployments/clusters/default.yaml or $DBTIER_SPEC)")
    return parser


def run_edge(body: Callable[[ClusterSpec], int], spec_path: str | None) -> int:
    """Load the spec, run ``body``; turn a :class:`DbtierError` into one line on stderr and its exit code."""
    try:
        spec = load_spec(spec_path)
        return body(spec)
    except DbtierError as err:
        logging.getLogger("dbtier").debug("failure", exc_info=True)
        print(f"dbtier: error: {err.one_line()}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("dbtier: interrupted", file=sys.stderr)
        return 130
