"""Thin Prefect tasks: each gets the engine and provider, calls one plain function, logs its sentence."""
