"""``lisgw unmatched assign ID --order/--sample``: a review item's result matched to a HIS order,
its ORU^R01 queued in the outbox, the item resolved and audited; on SQLite and PostgreSQL.

The populated store (conftest.py) holds one open review item: WBC=3.3 for sample S-9999, which
had no order. Orders added here are invented (tests/integration/store/factories.py).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from lisgw.his.profile import HisProfile
from lisgw.his.results import payload_identity
from lisgw.hl7 import apy
from lisgw.hl7.message import parse_message
from lisgw.routing import RoutingConfig
from lisgw.services.pipeline import payload_identity as pipeline_payload_identity
from lisgw.store import work
from lisgw.store.records import OrderState, OutboxRow, ReviewState, TestState
from lisgw.store.review_match import match_review
from lisgw.store.runner import Store
from lisgw.store.schema import results
from tests.integration.cli.conftest import LOST_SAMPLE, Populated, lisgw
from tests.integration.store.factories import (
    CODES,
    NOW,
    ROUTES,
    his_order,
    result,
    results_message,
    route_and_save,
)

TEST_CODES = """\
sysmex-xn:
  WBC: {his: "HEM-WBC", loinc: "6690-2"}
  RBC: {his: "HEM-RBC", loinc: "789-8"}
  HGB: HEM-HGB
  PLT: HEM-PLT
"""
CONFIG = """\
data_dir: {data_dir}
test_codes: test-codes.yaml
his:
  profile: hl7-v251
  results: {{host: 127.0.0.1, port: 2576}}
connections:
  - name: xn-1
    protocol: astm
    driver: sysmex-xn
    transport: tcp-server
    port: 5001
"""


@pytest.fixture
def config(tmp_path: Path) -> str:
    """A gateway configuration with the HIS profile hl7-v251 and the factories' test codes."""
    directory = tmp_path / "etc"
    directory.mkdir()
    (directory / "test-codes.yaml").write_text(TEST_CODES, encoding="utf-8")
    path = directory / "lisgw.yaml"
    path.write_text(textwrap.dedent(CONFIG.format(data_dir=tmp_path / "data")), encoding="utf-8")
    return str(path)


def add_orders(store: Store, *orders: tuple[str, str, tuple[str, ...]]) -> None:
    his = [his_order(placer, sample, *codes) for placer, sample, codes in orders]
    store.run_sync(work.save_his_orders, his, routes=ROUTES, now=NOW + 400)


def outbox(store: Store) -> list[OutboxRow]:
    return store.run_sync(work.outbox_rows)


def stored_result(store: Store, result_id: int) -> Any:
    def read(conn: sa.Connection) -> Any:
        return conn.execute(sa.select(results).where(results.c.id == result_id)).one()

    return store.run_sync(read)


def review_state(store: Store, review_id: int) -> tuple[ReviewState, str]:
    (item,) = [r for r in store.run_sync(work.review_queue, state=None) if r.id == review_id]
    return item.state, item.note


def check_oru(row: OutboxRow, placer: str, sample: str) -> None:
    """The payload is a valid ORU^R01 (hl7apy strict) for this order with the WBC result."""
    apy.validate(row.payload, "utf-8")
    oru = parse_message(row.payload)
    assert oru.control_id == row.control_id
    assert (oru.message_code, oru.trigger_event) == ("ORU", "R01")
    obr = oru.segment("OBR")
    assert obr is not None and (obr.get(2), obr.get(3)) == (placer, sample)
    observations = [(s.field(3), s.field(5), s.field(18)) for s in oru if s.name == "OBX"]
    assert observations == [("HEM-WBC^^L", "3.3", "xn-1")]


def test_assign_by_order_queues_the_result_and_resolves_the_item(
    populated: tuple[Populated, Store], config: str
) -> None:
    facts, store = populated
    add_orders(store, ("ORD-5", "S-5005", ("HEM-WBC", "HEM-RBC")))
    before = outbox(store)
    rid = str(facts.review_id)
    done = lisgw(
        facts.url, "unmatched", "assign", rid, "--order", "ORD-5", "--config", config,
        "--user", "alice", "--note", "tube relabelled",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert (
        f"review item {rid} (WBC=3.3 sample {LOST_SAMPLE} from xn-1): matched to order ORD-5"
    ) in done.output
    assert "recorded in the audit trail as alice" in done.output
    (row,) = [r for r in outbox(store) if r not in before]
    assert (row.order_placer, row.sample_id, row.connection) == ("ORD-5", "S-5005", "xn-1")
    assert f"queued as outbox {row.id}" in done.output
    check_oru(row, "ORD-5", "S-5005")
    stored = stored_result(store, facts.unmatched_result)
    assert (stored.match, stored.order_placer, stored.his_code, stored.outbox_id) == (
        "matched", "ORD-5", "HEM-WBC", row.id,
    )  # fmt: skip
    assert stored.sample_id == LOST_SAMPLE  # what the analyzer sent is kept
    order = store.run_sync(work.orders_by_placer, ["ORD-5"])["ORD-5"]
    assert order.state == OrderState.PARTIAL
    assert [(t.his_code, t.state) for t in order.tests] == [
        ("HEM-WBC", TestState.RESULTED),
        ("HEM-RBC", TestState.OPEN),
    ]
    state, note = review_state(store, facts.review_id)
    assert state == ReviewState.RESOLVED
    assert note == f"matched to order ORD-5 (HEM-WBC); queued as outbox {row.id}: tube relabelled"
    trail = store.run_sync(work.audit_trail, entity="review", entity_id=facts.review_id)
    assert [(a.actor, a.action, a.detail) for a in trail] == [("alice", "review.resolved", note)]

    again = lisgw(facts.url, "unmatched", "assign", rid, "--order", "ORD-5", "--config", config)
    assert again.exit_code == 1
    assert f"review item {rid} is resolved: it cannot be matched" in again.output
    assert len(outbox(store)) == len(before) + 1
    assert len(store.run_sync(work.audit_trail, entity="review")) == 1


def test_assign_by_sample_uses_the_one_open_order(
    populated: tuple[Populated, Store], config: str
) -> None:
    facts, store = populated
    add_orders(store, ("ORD-9", LOST_SAMPLE, ("HEM-WBC",)))
    rid = str(facts.review_id)
    done = lisgw(
        facts.url, "unmatched", "assign", rid, "--sample", f" {LOST_SAMPLE} ", "--config", config
    )
    assert done.exit_code == 0, done.output
    assert "matched to order ORD-9 (HEM-WBC)" in done.output
    (row,) = [r for r in outbox(store) if r.order_placer == "ORD-9"]
    check_oru(row, "ORD-9", LOST_SAMPLE)
    # The outbox identity is the one the pipeline gives a matched result's message.
    identity = stored_result(store, facts.unmatched_result).identity
    assert row.identity == pipeline_payload_identity([identity]) == payload_identity([identity])
    order = store.run_sync(work.orders_by_placer, ["ORD-9"])["ORD-9"]
    assert order.state == OrderState.COMPLETE


def test_ambiguous_or_missing_sample_is_refused_with_the_candidates(
    populated: tuple[Populated, Store], config: str
) -> None:
    facts, store = populated
    add_orders(
        store, ("ORD-7A", "S-7007", ("HEM-WBC",)), ("ORD-7B", "S-7007", ("HEM-WBC", "HEM-RBC"))
    )
    before = outbox(store)
    rid = str(facts.review_id)
    several = lisgw(facts.url, "unmatched", "assign", rid, "--sample", "S-7007", "--config", config)
    assert several.exit_code == 1
    assert (
        "sample 'S-7007' has 2 open orders: ORD-7A (HEM-WBC); ORD-7B (HEM-WBC, HEM-RBC); "
        "name one by its placer number"
    ) in several.output
    none = lisgw(facts.url, "unmatched", "assign", rid, "--sample", "S-0000", "--config", config)
    assert none.exit_code == 1
    assert "no open order for sample 'S-0000'" in none.output
    # S-1001's order ORD-1 is partial (open); S-2002's ORD-2 asks for HGB only.
    assert outbox(store) == before
    assert review_state(store, facts.review_id)[0] == ReviewState.OPEN
    assert store.run_sync(work.audit_trail, entity="review") == []


def test_unknown_item_unknown_order_and_unordered_test_are_refused(
    populated: tuple[Populated, Store], config: str
) -> None:
    facts, store = populated
    before = outbox(store)
    rid = str(facts.review_id)
    unknown_item = lisgw(
        facts.url, "unmatched", "assign", "404", "--order", "ORD-1", "--config", config
    )
    assert unknown_item.exit_code == 1 and "no review item 404" in unknown_item.output
    unknown_order = lisgw(
        facts.url, "unmatched", "assign", rid, "--order", "NOPE", "--config", config
    )
    assert unknown_order.exit_code == 1
    assert "no order with placer number 'NOPE'" in unknown_order.output
    unordered = lisgw(facts.url, "unmatched", "assign", rid, "--order", "ORD-2", "--config", config)
    assert unordered.exit_code == 1
    assert (
        f"review item {rid}: result WBC=3.3 does not match order 'ORD-2' (tests: HEM-HGB): "
        "test 'WBC' not ordered for sample 'S-2002'"
    ) in unordered.output
    assert outbox(store) == before
    assert stored_result(store, facts.unmatched_result).match == "unmatched"
    assert store.run_sync(work.audit_trail, entity="review") == []


def test_options_and_configuration_are_checked(
    populated: tuple[Populated, Store], config: str
) -> None:
    facts, store = populated
    rid = str(facts.review_id)
    both = lisgw(
        facts.url, "unmatched", "assign", rid, "--order", "ORD-1", "--to", "bob", "--config", config
    )
    assert both.exit_code == 2
    assert "--to gives the item to someone; --order/--sample match" in both.output
    two = lisgw(
        facts.url, "unmatched", "assign", rid, "--order", "ORD-1", "--sample", "S-1001",
        "--config", config,
    )  # fmt: skip
    assert two.exit_code == 2 and "give --order or --sample, not both" in two.output
    store_only = lisgw(facts.url, "unmatched", "assign", rid, "--order", "ORD-1")
    assert store_only.exit_code == 1
    assert "needs the gateway configuration" in store_only.output
    assert "give --config FILE" in store_only.output
    assert review_state(store, facts.review_id)[0] == ReviewState.OPEN


def test_assign_to_a_person_still_works(populated: tuple[Populated, Store]) -> None:
    facts, store = populated
    before = outbox(store)
    rid = str(facts.review_id)
    done = lisgw(facts.url, "unmatched", "assign", rid, "--to", "bob", "--user", "alice")
    assert done.exit_code == 0, done.output
    assert "assigned to bob" in done.output
    (item,) = store.run_sync(work.review_queue, state=ReviewState.ASSIGNED)
    assert item.assignee == "bob"
    trail = store.run_sync(work.audit_trail, entity="review", entity_id=facts.review_id)
    assert [(a.actor, a.action) for a in trail] == [("alice", "review.assigned")]
    assert outbox(store) == before


def test_a_result_already_sent_unsolicited_gets_its_own_message(
    populated: tuple[Populated, Store],
) -> None:
    """With send_unsolicited the result went out without an order: the message for the order
    must not reuse that outbox identity or MSH-10 (the HIS would drop it as a resend)."""
    _, store = populated
    add_orders(store, ("ORD-6", "S-6006", ("HEM-PLT",)))

    def unsolicited(conn: sa.Connection) -> Any:
        return route_and_save(
            conn,
            results_message("S-6006-X", result("PLT", "250")),
            now=NOW + 500,
            config=RoutingConfig(send_unsolicited=True),
        )[1]

    saved = store.run_sync(unsolicited)
    (sent,) = saved.outbox
    (item,) = saved.review
    matched = store.run_sync(
        match_review,
        item.id,
        placer="ORD-6",
        profile=HisProfile.plain("2.5.1"),
        codes=CODES,
        actor="carol",
        now=NOW + 600,
    )
    assert matched.outbox.id != sent.id
    assert matched.outbox.identity != sent.identity
    assert matched.outbox.control_id != sent.control_id
    apy.validate(matched.outbox.payload, "utf-8")
    oru = parse_message(matched.outbox.payload)
    assert oru.control_id == matched.outbox.control_id
    obr = oru.segment("OBR")
    assert obr is not None and (obr.get(2), obr.get(3)) == ("ORD-6", "S-6006")
    assert stored_result(store, item.result_id).outbox_id == matched.outbox.id
