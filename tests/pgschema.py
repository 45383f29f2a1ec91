"""A fresh PostgreSQL schema for one trial test case, dropped when the test ends.

The URL comes from LISGW_TEST_PG_URL (default: the local server CI starts). An unreachable
server fails the test with a message naming the URL; it is never skipped.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from twisted.trial import unittest

from lisgw.errors import StoreError
from lisgw.store.database import make_engine
from tests.integration.store.conftest import PG_URL


def fresh_pg_schema(case: unittest.TestCase, prefix: str = "lisgw") -> sa.URL:
    """Create a uniquely named schema; the returned URL has it as ``search_path``."""
    try:
        admin = make_engine(PG_URL, connect_args={"connect_timeout": 5})
    except StoreError as error:
        case.fail(f"PostgreSQL is unreachable at {PG_URL} (set LISGW_TEST_PG_URL): {error}")
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')

    def drop() -> None:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()

    case.addCleanup(drop)  # cleanups run last-in first-out: after the test's own engines
    return make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
