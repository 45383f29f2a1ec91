"""A review item matched by hand: its result attached to a HIS order and queued for the HIS.

Layer: store. Imports sqlalchemy, lisgw.routing (the matching rules) and lisgw.his (the
ORU^R01 builder); one unit of work (see lisgw.store.archive for the conventions), used by
``lisgw unmatched assign ID --order PLACER | --sample SAMPLE_ID``.

``match_review`` does, all or nothing, what the result pipeline (lisgw.services.pipeline)
would have done had the order been there when the result came:

1. the order: by placer number (any state but cancelled, as routing allows corrections
   against completed orders), or the one open or partial order of a sample ID — none or
   several is a refusal that lists the candidates;
2. the match: ``lisgw.routing.route`` runs on the stored result against that order's tests
   alone, with the configuration's test-code table: the same rules as a normal match (HIS
   code from the table, else the analyzer code the order was queued with). A result the
   order does not ask for is refused with routing's reason and the order's tests;
3. the result row: match ``matched``, its order placer, HIS code and LOINC, a reason saying
   who matched it, the outbox row that carries it; the order test resulted and the order's
   state re-derived (lisgw.store.orders.refresh_order_states);
4. the ORU^R01, built by lisgw.his.results.build_result_message with the HIS profile, as
   the pipeline builds it (OBX-18 the connection, MSH-7 now in UTC), queued pending in the
   outbox; the running daemon's dispatcher polls the outbox and delivers it;
5. the review item resolved, its note saying what was done; the audit row
   (``review.resolved``) carries the technician's name and the same text.

The outbox identity is the pipeline's (sha256 of the result identities) so the HIS sees what
it would have seen. When the result already went out unsolicited (``send_unsolicited``), that
identity is taken: the message for the order then gets identities marked with the placer
(``…#order=PLACER``), hence its own outbox identity and MSH-10, so the HIS does not drop it
as a redelivery. A second assign of the same item is refused (it is resolved), and the
outbox's UNIQUE identity means it could never be queued twice anyway.

Refusals raise ``StoreError`` naming the item, order or sample and why; nothing is changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa

from lisgw.drivers.mapping import TestCodeMap
from lisgw.errors import CodecError, LocalProtocolError, StoreError
from lisgw.his.profile import HisProfile
from lisgw.his.results import build_result_message, control_id_for, hl7_now, payload_identity
from lisgw.his.types import RoutedResult
from lisgw.model import Kind, NormalizedMessage, Protocol, Result, Specimen
from lisgw.routing import normalize_sample_id, route
from lisgw.store._sql import insert_ignore
from lisgw.store.order_lookups import open_orders_for, orders_by_placer
from lisgw.store.orders import refresh_order_states
from lisgw.store.outbox import outbox_row
from lisgw.store.queues import ReviewItem, get_review
from lisgw.store.records import (
    OrderRecord,
    OrderState,
    OutboxRow,
    OutboxState,
    ReviewState,
    TestState,
)
from lisgw.store.results import set_review_state
from lisgw.store.schema import order_tests, orders, outbox, results, review

__all__ = ["ReviewMatched", "match_review"]

_MATCHABLE = (ReviewState.OPEN, ReviewState.ASSIGNED)
_OPEN_ORDERS = (str(OrderState.OPEN), str(OrderState.PARTIAL))


@dataclass(frozen=True, slots=True)
class ReviewMatched:
    """What ``match_review`` did: the item (now resolved), the order, the queued delivery."""

    item: ReviewItem
    order_placer: str
    order_sample_id: str
    his_code: str
    outbox: OutboxRow
    detail: str


def match_review(
    conn: sa.Connection,
    review_id: int,
    *,
    placer: str | None = None,
    sample_id: str | None = None,
    profile: HisProfile,
    codes: TestCodeMap | None,
    actor: str,
    now: float,
    note: str = "",
) -> ReviewMatched:
    """Attach review item ``review_id``'s result to an order and queue it (module docstring).

    Exactly one of ``placer`` (the order's placer number) and ``sample_id`` names the order.
    """
    if (placer is None) == (sample_id is None):
        raise StoreError("name the order by its placer number or by a sample ID (one of them)")
    # Two technicians matching the same item at once: the second waits for the first's
    # commit, then sees the item resolved (PostgreSQL; SQLite serialises writers anyway).
    conn.execute(sa.select(review.c.id).where(review.c.id == review_id).with_for_update())
    item = get_review(conn, review_id)
    if item is None:
        raise StoreError(f"no review item {review_id}")
    if item.state not in _MATCHABLE:
        raise StoreError(f"review item {review_id} is {item.state}: it cannot be matched")
    stored = _stored_result(conn, item)
    order = _order_by_placer(conn, placer) if placer is not None else None
    if order is None:
        order = _order_by_sample(conn, normalize_sample_id(sample_id or ""))
    routed = _routed(conn, item, stored, order, codes)
    row = _queue(conn, routed, stored, order, profile, now)
    detail = f"matched to order {order.placer} ({routed.his_code}); queued as outbox {row.id}"
    if note:
        detail = f"{detail}: {note}"
    _update_result(conn, item.result_id, routed, row.id, actor, item.reason)
    _complete_test(conn, order, routed.his_code, now)
    set_review_state(conn, review_id, ReviewState.RESOLVED, actor=actor, now=now, note=detail)
    after = get_review(conn, review_id)
    if after is None:  # the row was updated in this transaction: it cannot be gone
        raise StoreError(f"no review item {review_id}")
    return ReviewMatched(after, order.placer, order.sample_id, routed.his_code, row, detail)


def _stored_result(conn: sa.Connection, item: ReviewItem) -> sa.Row[Any]:
    row = conn.execute(sa.select(results).where(results.c.id == item.result_id)).one()
    if row.match != "unmatched":
        raise StoreError(
            f"review item {item.id}: result {item.result_id} is {row.match}, not unmatched"
        )
    return row


def _order_by_placer(conn: sa.Connection, placer: str) -> OrderRecord:
    order = orders_by_placer(conn, [placer]).get(placer)
    if order is None:
        raise StoreError(f"no order with placer number {placer!r}")
    if order.state == OrderState.CANCELLED:
        raise StoreError(f"order {placer!r} is cancelled: results cannot be delivered against it")
    return order


def _order_by_sample(conn: sa.Connection, sample_id: str) -> OrderRecord:
    """The one open (or partial) order of a sample; StoreError listing the candidates."""
    placers = list(
        conn.execute(
            sa.select(orders.c.placer)
            .where(orders.c.sample_id == sample_id, orders.c.state.in_(_OPEN_ORDERS))
            .order_by(orders.c.id)
        ).scalars()
    )
    if len(placers) == 1:
        return orders_by_placer(conn, placers)[placers[0]]
    if not placers:
        others = conn.execute(
            sa.select(orders.c.placer, orders.c.state)
            .where(orders.c.sample_id == sample_id)
            .order_by(orders.c.id)
        ).all()
        listed = ", ".join(f"{o.placer} ({o.state})" for o in others)
        hint = f" (its orders: {listed}; name one by its placer number)" if others else ""
        raise StoreError(f"no open order for sample {sample_id!r}{hint}")
    found = orders_by_placer(conn, placers)
    listed = "; ".join(f"{p} ({', '.join(t.his_code for t in found[p].tests)})" for p in placers)
    raise StoreError(
        f"sample {sample_id!r} has {len(placers)} open orders: {listed}; "
        "name one by its placer number"
    )


def _routed(
    conn: sa.Connection,
    item: ReviewItem,
    stored: sa.Row[Any],
    order: OrderRecord,
    codes: TestCodeMap | None,
) -> RoutedResult:
    """The stored result routed against this order's tests alone (lisgw.routing rules)."""
    sample = normalize_sample_id(order.sample_id) or order.placer
    candidates = open_orders_for(conn, [order.sample_id]).get(order.sample_id, [])
    tests = [replace(t, sample_id=sample) for t in candidates if t.placer == order.placer]
    message = NormalizedMessage(
        protocol=Protocol.ASTM,  # not read by routing: the result is already normalized
        kind=Kind.RESULTS,
        specimens=(Specimen(sample_id=sample, results=(_result(stored.result),)),),
        driver=stored.driver,
    )
    outcome = route(
        message,
        connection=stored.connection,
        orders={sample: tests},
        codes=codes,
        known=set(),
        identities=[stored.identity],
    )
    (routed,) = outcome.results
    if routed.match != "matched":
        ordered = ", ".join(t.his_code for t in order.tests if t.state != TestState.CANCELLED)
        raise StoreError(
            f"review item {item.id}: result {stored.test}={stored.value} does not match order "
            f"{order.placer!r} (tests: {ordered or 'none'}): {routed.reason}"
        )
    return routed


def _queue(
    conn: sa.Connection,
    routed: RoutedResult,
    stored: sa.Row[Any],
    order: OrderRecord,
    profile: HisProfile,
    now: float,
) -> OutboxRow:
    """Build the ORU^R01 and insert its outbox row (or find the one already there)."""
    message_result = routed
    if stored.outbox_id is not None:  # already sent unsolicited: a new identity and MSH-10
        message_result = replace(routed, identity=f"{routed.identity}#order={order.placer}")
    identities = (message_result.identity,)
    identity = payload_identity(identities)
    try:
        payload = build_result_message(
            [message_result],
            order.as_his_order(),
            profile,
            analyzer=routed.connection,
            now_timestamp=hl7_now(now),
        )
    except (CodecError, LocalProtocolError) as error:
        raise StoreError(f"result message for order {order.placer!r} not built: {error}") from error
    values = {
        "identity": identity,
        "connection": routed.connection,
        "sample_id": routed.sample_id,
        "order_placer": order.placer,
        "control_id": control_id_for(identities),
        "payload": payload,
        "state": str(OutboxState.PENDING),
        "attempts": 0,
        "next_attempt_at": now,
        "claimed_by": None,
        "lease_until": None,
        "last_error": "",
        "first_failed_at": None,
        "created_at": now,
        "delivered_at": None,
    }
    statement = insert_ignore(conn, outbox, ["identity"], returning=True)
    row = conn.execute(statement, values).one_or_none()
    if row is None:  # the same content was queued before: never a second row
        row = conn.execute(sa.select(outbox).where(outbox.c.identity == identity)).one()
    return outbox_row(row)


def _update_result(
    conn: sa.Connection,
    result_id: int,
    routed: RoutedResult,
    outbox_id: int,
    actor: str,
    was: str,
) -> None:
    conn.execute(
        sa.update(results)
        .where(results.c.id == result_id)
        .values(
            match="matched",
            order_placer=routed.order_placer,
            his_code=routed.his_code,
            loinc=routed.loinc,
            reason=f"matched by {actor} from review (was: {was})",
            outbox_id=outbox_id,
        )
    )


def _complete_test(conn: sa.Connection, order: OrderRecord, his_code: str, now: float) -> None:
    """The order test resulted, as lisgw.store.results does for a routed match."""
    conn.execute(
        sa.update(order_tests)
        .where(
            order_tests.c.order_id == order.id,
            order_tests.c.his_code == his_code,
            order_tests.c.state == str(TestState.OPEN),
        )
        .values(state=str(TestState.RESULTED))
    )
    refresh_order_states(conn, [order.placer], now)


def _result(document: Mapping[str, Any]) -> Result:
    """A Result from its stored JSON (lisgw.model.Result.to_json)."""
    lists = ("flag_meanings", "comments")
    fields: dict[str, Any] = {k: tuple(v) if k in lists else v for k, v in document.items()}
    return Result(**fields)
