"""Prefect blocks: the cluster spec and the cluster's passwords."""
