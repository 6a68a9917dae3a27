"""Thin Prefect tasks: each gets the engine and provider, calls one plain function, logs its sentence."""

from __future__ import annotations


def log_sentences(*sentences: str) -> None:
    """Log each outcome sentence of a step on the current run's logger."""
    from prefect import get_run_logger

    logger = get_run_logger()
    for sentence in sentences:
        logger.info("%s", sentence)
