"""Backups, WAL archiving and point-in-time restore with pgBackRest."""
