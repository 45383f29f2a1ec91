"""Alembic revisions of the store, numbered 0001, 0002 … (each one tested both ways)."""
