"""Durable store: SQLAlchemy schema, repository API, Alembic migrations (issue 5).

Layer: store. Entry points: lisgw.store.database.make_engine (engines set up for
durability), lisgw.store.migrate (schema upgrades), lisgw.store.runner.Store (runs units of
work on a thread pool or inline), lisgw.store.work (every unit of work) and
lisgw.store.records (the frozen dataclasses they return). This package imports nothing, so
that importing the schema (Alembic's env.py) does not import Twisted.
"""
