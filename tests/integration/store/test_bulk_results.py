"""The executemany result/review inserts (lisgw.store.bulk_results) against the former path.

Both paths of ``save_routed_results`` (``legacy=True``: SQLAlchemy INSERT … RETURNING with
CleanText per column) must store the same rows, text cleaning included, and report the same
duplicates, review rows and completed order tests, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from lisgw.routing import RoutingConfig, route
from lisgw.store import work
from lisgw.store.records import RoutedSaved
from lisgw.store.runner import Store
from lisgw.store.schema import order_tests, results, review

from .factories import (
    CODES,
    CONNECTION,
    NOW,
    ROUTES,
    his_order,
    payloads_for,
    result,
    results_message,
    store_message,
)

UNSOLICITED = RoutingConfig(send_unsolicited=True)
# A NUL and a lone surrogate (an undecodable byte read with surrogateescape) in the value.
ODD_VALUE = "5.0\x00x\udcff"


def _save(conn: sa.Connection, sample: str, *, legacy: bool) -> RoutedSaved:
    message = results_message(
        sample, result("WBC"), result("XYZ", ODD_VALUE), result("RBC", "4.1"), result("PLT")
    )
    stored = store_message(conn, message, NOW)
    outcome = route(
        message,
        connection=CONNECTION,
        orders=work.open_orders_for(conn, [sample]),
        codes=CODES,
        known=set(),
        config=UNSOLICITED,
    )
    return work.save_routed_results(
        conn, stored.id, outcome, payloads_for(outcome), NOW, legacy=legacy
    )


def _rows(conn: sa.Connection, message_id: int) -> list[dict[str, Any]]:
    query = sa.select(results).where(results.c.message_id == message_id).order_by(results.c.id)
    return [
        {k: v for k, v in row._mapping.items() if k not in ("id", "message_id", "outbox_id")}
        for row in conn.execute(query)
    ]


@pytest.mark.parametrize("legacy", [False, True])
def test_both_paths_store_the_same_rows(store: Store, legacy: bool) -> None:
    store.run_sync(
        work.save_his_orders, [his_order("P1", "S1", "HEM-WBC", "HEM-RBC")], routes=ROUTES, now=NOW
    )
    saved = store.run_sync(_save, "S1", legacy=legacy)
    assert [r.match for r in saved.results] == ["matched", "unmatched", "matched", "extra"]
    message_id = saved.results[0].message_id
    rows = store.run_sync(_rows, message_id)
    assert [r["identity"] for r in rows] == [r.identity for r in saved.results]
    odd = rows[1]
    assert odd["value"] == "5.0\u2400x\\udcff"  # clean_text's rule, on either path
    assert odd["result"]["value"] == ODD_VALUE  # the JSON copy keeps the text as decoded
    assert odd["reason"] == "unknown test code 'XYZ' for driver 'sysmex-xn'"
    assert [r.result_id for r in saved.review] == [saved.results[1].id]

    def review_rows(conn: sa.Connection) -> list[tuple[int, int, str]]:
        query = sa.select(review.c.id, review.c.result_id, review.c.reason)
        return [tuple(row) for row in conn.execute(query.order_by(review.c.id))]

    assert store.run_sync(review_rows) == [(r.id, r.result_id, r.reason) for r in saved.review]

    def test_states(conn: sa.Connection) -> dict[str, str]:
        query = sa.select(order_tests.c.his_code, order_tests.c.state)
        return {code: state for code, state in conn.execute(query)}

    assert store.run_sync(test_states) == {"HEM-WBC": "resulted", "HEM-RBC": "resulted"}


@pytest.mark.parametrize("legacy", [False, True])
def test_identity_stored_meanwhile_is_a_duplicate(store: Store, legacy: bool) -> None:
    """A result stored after routing read ``known`` (another gateway on the same database)
    is skipped by ON CONFLICT and reported as a duplicate, not stored twice."""
    first = store.run_sync(_save, "S2", legacy=legacy)
    again = store.run_sync(_save, "S2", legacy=legacy)  # known=set(): routing saw nothing
    assert again.results == () and again.review == ()
    assert sorted(again.duplicates) == sorted(r.identity for r in first.results)
