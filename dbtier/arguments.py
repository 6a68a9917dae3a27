"""Command-line parsers for every dbtier command: ``--help`` shows the defaults, a bad argument is one line.

Pure: no Prefect, no I/O beyond argparse's own printing.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

EXIT_USAGE = 2


class HelpWithDefaults(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the description as written; add ``(default: X)`` where a default means something (not None, not off)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False) or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, ``dbtier: error: <field>: <what>; see <prog> --help``, exit 2.

    >>> p = Parser(prog="dbtier backup")
    >>> _ = p.add_argument("--kind", default="auto", choices=["auto", "full"])
    >>> one_line_error("argument --kind: invalid choice: 'x' (choose from 'auto', 'full')", p.prog)
    "dbtier: error: --kind: invalid choice: 'x' (choose from 'auto', 'full'); see dbtier backup --help"
    >>> "(default: auto)" in p.format_help()
    True
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpWithDefaults)
        kwargs.setdefault("prog", module_prog())
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        """An option without help text still shows its default in ``--help``."""
        default = kwargs.get("default")
        if not kwargs.get("help") and default is not None and not isinstance(default, bool):
            kwargs["help"] = "(default: %(default)s)"
        return super().add_argument(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        print(one_line_error(message, self.prog), file=sys.stderr)
        sys.exit(EXIT_USAGE)


def module_prog() -> str | None:
    """``python -m flows.backup`` when this process was started so (argparse would say ``backup.py``); else None,
    and argparse names the program after ``sys.argv[0]`` (``dbtier backup`` when the front door runs it)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = getattr(spec, "name", None)
    return f"python -m {name}" if name and name.startswith(("flows.", "deployments.", "dbtier.")) else None


def one_line_error(message: str, prog: str) -> str:
    """argparse's message as dbtier's one refusal line.

    >>> one_line_error("the following arguments are required: --scenario", "dbtier drill")
    'dbtier: error: the following arguments are required: --scenario; see dbtier drill --help'
    >>> one_line_error("argument command: invalid choice: 'x'", "dbtier")
    "dbtier: error: command: invalid choice: 'x'; see dbtier --help"
    """
    text = " ".join(message.split()).removeprefix("argument ")
    return f"dbtier: error: {text}; see {prog} --help"
