"""dbtier's own errors are expected outcomes with one-line messages: Prefect logs them without a traceback.

Prefect logs the exception that ends a task or flow run with ``exc_info``, so the console and the UI get
a full stack trace for a refusal as much as for a bug. This filter, on Prefect's run loggers, drops the
traceback when the exception is a :class:`DbtierError` (its message already says what is wrong and what
to do); any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging

from dbtier.errors import DbtierError

#: The loggers Prefect's engines log a run's end on (their records reach the console and the API).
RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


class DropDbtierTracebacks(logging.Filter):
    """Keep the record, without ``exc_info``, when it carries a :class:`DbtierError`.

    >>> import sys
    >>> try:
    ...     raise DbtierError("repo: 2 is not a repository")
    ... except DbtierError:
    ...     record = logging.LogRecord("prefect.task_runs", logging.ERROR, "", 0, "failed", None, sys.exc_info())
    >>> DropDbtierTracebacks().filter(record), record.exc_info
    (True, None)
    >>> try:
    ...     raise KeyError("bug")
    ... except KeyError:
    ...     record = logging.LogRecord("prefect.task_runs", logging.ERROR, "", 0, "failed", None, sys.exc_info())
    >>> DropDbtierTracebacks().filter(record), record.exc_info[0].__name__
    (True, 'KeyError')
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], DbtierError):
            record.exc_info = None
            record.exc_text = None
        return True


class QuietTemporaryServer(logging.Filter):
    """Drop Prefect's 'Starting/Stopping temporary server' lines (three per command): the temporary API is how
    every command runs without PREFECT_API_URL, not news, and they would frame each refusal's one line.

    >>> record = logging.LogRecord("prefect", logging.INFO, "", 0, "Starting temporary server on http://x", None, None)
    >>> QuietTemporaryServer().filter(record)
    False
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.INFO and str(record.msg).startswith(
            ("Starting temporary server", "Stopping temporary server")))


def install() -> None:
    """Put the filters on Prefect's loggers (once; logging.config keeps a logger's filters)."""
    for name, kind in [*((n, DropDbtierTracebacks) for n in RUN_LOGGERS), ("prefect", QuietTemporaryServer)]:
        logger = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())
