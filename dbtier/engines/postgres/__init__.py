"""The PostgreSQL engine: Patroni over etcd, pgBackRest, HAProxy and PgBouncer (engine.py: PostgresEngine)."""
