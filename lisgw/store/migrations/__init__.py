"""Alembic migration environment of the store (env.py, script.py.mako, versions/).

Layer: store. Run through lisgw.store.migrate, which configures Alembic in code: no
alembic.ini is needed at run time.
"""
