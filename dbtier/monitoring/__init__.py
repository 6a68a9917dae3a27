"""Monitoring: the alert rules dbtier ships and the metrics only dbtier knows (backups, drills, certificates)."""
