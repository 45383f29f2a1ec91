"""A populated store on SQLite and PostgreSQL for the technician command tests.

The store is filled through the real units of work (lisgw.store.work, lisgw.store.status):
two analyzer connections with their reported line states, the gateway's node row, HIS
orders queued for the analyzers, a host query and its reply, routed results (matched and
unmatched, with a review item), and outbox rows delivered, dead and pending. Sample IDs,
patients and values are invented (tests/integration/store/factories.py): no patient data.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from sqlalchemy.engine import Engine

from lisgw.cli import main
from lisgw.model import Query
from lisgw.store import migrate, work
from lisgw.store.records import ConnectionState, Direction
from lisgw.store.runner import Store
from lisgw.store.status import LineStatus, NodeStatus, publish_lines, publish_node
from tests.integration.store.conftest import backend_engine  # noqa: F401  (fixture)
from tests.integration.store.factories import (
    CONNECTION,
    NOW,
    ROUTES,
    fill_outbox,
    his_order,
    result,
    results_message,
    route_and_save,
)

SAMPLE = "S-1001"
OTHER_SAMPLE = "S-2002"
LOST_SAMPLE = "S-9999"
DEAD_SAMPLE = "S-3003"
RETRY_SAMPLE = "S-4004"
NODE = "lab-gw:/var/lib/lisgw"
DEAD_REASON = "AE: unknown patient in HIS"
RETRY_REASON = "connection refused"


@dataclass(frozen=True, slots=True)
class Populated:
    """What the populated store holds, by id."""

    url: str
    matched_result: int
    unmatched_result: int
    review_id: int
    delivered_outbox: int
    dead_outbox: int
    pending_outbox: int


def populate(conn: sa.Connection, now_wall: float) -> Populated:
    work.register_connection(
        conn, CONNECTION, driver="sysmex-xn@1", protocol="astm", transport="tcp-server", now=NOW
    )
    work.register_connection(conn, "xn-2", protocol="astm", transport="tcp-client", now=NOW)
    orders = [
        his_order("ORD-1", SAMPLE, "HEM-WBC", "HEM-RBC"),
        his_order("ORD-2", OTHER_SAMPLE, "HEM-HGB"),
    ]
    work.save_his_orders(conn, orders, routes=ROUTES, now=NOW)
    asked = work.save_message(
        conn,
        b"Q raw",
        direction=Direction.IN,
        protocol="astm",
        kind="query",
        now=NOW + 20,
        connection=CONNECTION,
    )
    query = work.save_query(conn, asked.id, Query(sample_ids=(f"  {SAMPLE}",)), now=NOW + 20)
    work.save_reply(conn, query.id, b"reply", tests=2, now=NOW + 21)
    _, matched = route_and_save(conn, results_message(SAMPLE, result("WBC", "7.1")), now=NOW + 60)
    _, lost = route_and_save(
        conn, results_message(LOST_SAMPLE, result("WBC", "3.3")), now=NOW + 120
    )
    fill_outbox(conn, [DEAD_SAMPLE], NOW + 180)
    claimed = {row.sample_id: row.id for row in work.claim_outbox(conn, "w", NOW + 200, 10, 30)}
    work.outbox_delivered(conn, claimed[SAMPLE], now=NOW + 201, worker="w")
    work.outbox_dead(conn, claimed[DEAD_SAMPLE], worker="w", reason=DEAD_REASON, now=NOW + 202)
    (pending,) = fill_outbox(conn, [RETRY_SAMPLE], NOW + 300)
    work.claim_outbox(conn, "w", NOW + 301, 10, 30)
    work.outbox_retry(
        conn, pending.id, worker="w", next_attempt_at=NOW + 900, error=RETRY_REASON, now=NOW + 302
    )
    publish_node(conn, NodeStatus(NODE, 4242, "0.1.0", now_wall - 60, now_wall))
    publish_lines(
        conn,
        [
            LineStatus(
                CONNECTION,
                NODE,
                ConnectionState.CONNECTED,
                "10.1.2.3:40001",
                NOW,
                NOW + 60,
                0,
                0,
                "",
                now_wall,
            ),
            LineStatus(
                "xn-2",
                NODE,
                ConnectionState.DOWN,
                "",
                NOW,
                None,
                4,
                5,
                "Connection was refused by other side",
                now_wall,
            ),
        ],
        now_wall,
    )
    return Populated(
        url="",
        matched_result=matched.results[0].id,
        unmatched_result=lost.results[0].id,
        review_id=lost.review[0].id,
        delivered_outbox=claimed[SAMPLE],
        dead_outbox=claimed[DEAD_SAMPLE],
        pending_outbox=pending.id,
    )


@pytest.fixture
def populated(backend_engine: Engine) -> Iterator[tuple[Populated, Store]]:  # noqa: F811
    """The populated store: its URL for --store, and a Store to check what commands wrote."""
    migrate.upgrade(backend_engine)
    store = Store(backend_engine)
    facts = store.run_sync(populate, time.time())
    url = backend_engine.url.render_as_string(hide_password=False)
    try:
        yield Populated(url, *(getattr(facts, f) for f in _IDS)), store
    finally:
        store.close()


_IDS = (
    "matched_result",
    "unmatched_result",
    "review_id",
    "delivered_outbox",
    "dead_outbox",
    "pending_outbox",
)


def lisgw(url: str, *args: str, input: str | None = None) -> Result:
    """Run ``lisgw ARGS --store URL`` in-process."""
    runner = CliRunner()
    return runner.invoke(main, [*args, "--store", url], input=input, catch_exceptions=False)
