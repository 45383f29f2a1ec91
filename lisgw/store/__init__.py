"""Durable store: SQLAlchemy schema, repository API, Alembic migrations (issue 5)."""
