"""Thin Prefect tasks: each gets the engine and provider, calls one plain function, logs its sentence."""

from __future__ import annotations


def log_sentences(*sentences: str) -> None:
    """Log each outcome sentence of a step on the current run's logger (outside a run, as a command line's checks
    before its flow run starts, they stay unsaid)."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        logger = get_run_logger()
    except MissingContextError:
        return
    for sentence in sentences:
        logger.info("%s", sentence)
