"""``lisgw outbox`` and ``lisgw unmatched``: listings, and actions written to the audit trail
with the technician's name, on both backends; unknown IDs and refusals change nothing."""

from __future__ import annotations

import json

from lisgw.store import work
from lisgw.store.records import OutboxState, ReviewState
from lisgw.store.runner import Store
from tests.integration.cli.conftest import (
    DEAD_REASON,
    DEAD_SAMPLE,
    LOST_SAMPLE,
    RETRY_SAMPLE,
    Populated,
    lisgw,
)


def states(store: Store) -> dict[int, OutboxState]:
    return {row.id: row.state for row in store.run_sync(work.outbox_rows)}


def test_outbox_list_dead_with_reason(populated: tuple[Populated, Store]) -> None:
    facts, _ = populated
    dead = lisgw(facts.url, "outbox", "list", "--dead", "--format", "json")
    assert dead.exit_code == 0, dead.output
    rows = json.loads(dead.output)
    assert [(r["id"], r["sample_id"], r["last_error"]) for r in rows] == [
        (facts.dead_outbox, DEAD_SAMPLE, DEAD_REASON)
    ]
    assert isinstance(rows[0]["payload"], int)  # the payload's size, not its content
    matching = lisgw(facts.url, "outbox", "list", "--reason", "UNKNOWN PATIENT")
    assert [line.split()[0] for line in matching.output.splitlines()[1:]] == [
        str(facts.dead_outbox)
    ]
    none = lisgw(facts.url, "outbox", "list", "--dead", "--reason", "timeout")
    assert none.output.strip() == "no outbox rows match"
    everything = lisgw(facts.url, "outbox", "list").output.splitlines()
    assert everything[0].split() == [
        "ID", "SAMPLE", "STATE", "TRIES", "CREATED", "NEXT/DONE", "LAST", "ERROR",
    ]  # fmt: skip
    assert len(everything) == 4 and all(len(line) <= 80 for line in everything)


def test_outbox_retry_dead_is_audited_with_the_user(populated: tuple[Populated, Store]) -> None:
    facts, store = populated
    result = lisgw(facts.url, "outbox", "retry", str(facts.dead_outbox), "--user", "alice")
    assert result.exit_code == 0, result.output
    assert f"outbox {facts.dead_outbox} (sample {DEAD_SAMPLE}): dead -> pending" in result.output
    assert "1 row(s) retried by alice" in result.output
    assert states(store)[facts.dead_outbox] == OutboxState.PENDING
    trail = store.run_sync(work.audit_trail, entity="outbox", entity_id=facts.dead_outbox)
    assert [(a.actor, a.action) for a in trail][-1] == ("alice", "outbox.requeue")


def test_outbox_retry_pending_makes_it_due_now(populated: tuple[Populated, Store]) -> None:
    facts, store = populated
    result = lisgw(facts.url, "outbox", "retry", str(facts.pending_outbox), "--user", "bob")
    assert result.exit_code == 0, result.output
    assert f"outbox {facts.pending_outbox} (sample {RETRY_SAMPLE}): pending, due now" in (
        result.output
    )
    (row,) = [r for r in store.run_sync(work.outbox_rows) if r.id == facts.pending_outbox]
    assert row.next_attempt_at > 1_000_900.0  # now, not the backoff time the row had
    trail = store.run_sync(work.audit_trail, entity="outbox", entity_id=facts.pending_outbox)
    assert [(a.actor, a.action) for a in trail] == [("bob", "outbox.retry-now")]


def test_outbox_retry_refuses_unknown_and_delivered(populated: tuple[Populated, Store]) -> None:
    facts, store = populated
    before = states(store)
    unknown = lisgw(facts.url, "outbox", "retry", str(facts.dead_outbox), "999")
    assert unknown.exit_code == 1
    assert "no outbox row 999; nothing retried" in unknown.output
    delivered = lisgw(facts.url, "outbox", "retry", str(facts.delivered_outbox))
    assert delivered.exit_code == 1
    assert f"outbox row {facts.delivered_outbox} is delivered" in delivered.output
    assert states(store) == before  # all or nothing
    assert store.run_sync(work.audit_trail, entity="outbox", entity_id=facts.dead_outbox)[
        -1
    ].action == ("outbox.dead")
    usage = lisgw(facts.url, "outbox", "retry")
    assert usage.exit_code == 2 and "give outbox IDs, or --all" in usage.output


def test_outbox_retry_all_asks_first(populated: tuple[Populated, Store]) -> None:
    facts, store = populated
    declined = lisgw(facts.url, "outbox", "retry", "--all", input="n\n")
    assert declined.exit_code == 1
    assert "Retry 1 dead letter(s)?" in declined.output and "nothing retried" in declined.output
    assert states(store)[facts.dead_outbox] == OutboxState.DEAD
    other = lisgw(facts.url, "outbox", "retry", "--all", "--reason", "timeout", "--yes")
    assert other.exit_code == 0 and "no dead letters mentioning 'timeout'" in other.output
    done = lisgw(facts.url, "outbox", "retry", "--all", "--reason", "unknown", "--yes")
    assert done.exit_code == 0, done.output
    assert states(store)[facts.dead_outbox] == OutboxState.PENDING


def test_unmatched_list(populated: tuple[Populated, Store]) -> None:
    facts, _ = populated
    result = lisgw(facts.url, "unmatched", "list")
    assert result.exit_code == 0, result.output
    (row,) = result.output.splitlines()[1:]
    assert row.split()[0] == str(facts.review_id)
    assert LOST_SAMPLE in row and "WBC=3.3" in row and "open" in row
    document = json.loads(lisgw(facts.url, "unmatched", "list", "--format", "json").output)
    assert document[0]["reason"].startswith("no order for sample")
    assert document[0]["result_id"] == facts.unmatched_result
    assigned = lisgw(facts.url, "unmatched", "list", "--state", "assigned")
    assert assigned.output.strip() == "no assigned review items"


def test_unmatched_assign_and_discard_are_audited(populated: tuple[Populated, Store]) -> None:
    facts, store = populated
    rid = str(facts.review_id)
    assigned = lisgw(facts.url, "unmatched", "assign", rid, "--user", "alice", "--note", "ward")
    assert assigned.exit_code == 0, assigned.output
    assert f"review item {rid} (WBC=3.3 sample {LOST_SAMPLE} from xn-1): assigned to alice" in (
        assigned.output
    )
    listed = json.loads(
        lisgw(facts.url, "unmatched", "list", "--state", "assigned", "--format", "json").output
    )
    assert [(i["id"], i["assignee"], i["note"]) for i in listed] == [
        (facts.review_id, "alice", "ward")
    ]
    discarded = lisgw(
        facts.url, "unmatched", "discard", rid, "--user", "bob", "--note", "QC material"
    )
    assert discarded.exit_code == 0, discarded.output
    (item,) = store.run_sync(work.review_queue, state=ReviewState.DISCARDED)
    assert item.note == "QC material"
    trail = store.run_sync(work.audit_trail, entity="review", entity_id=facts.review_id)
    assert [(a.actor, a.action, a.detail) for a in trail] == [
        ("alice", "review.assigned", "ward"),
        ("bob", "review.discarded", "QC material"),
    ]
    again = lisgw(facts.url, "unmatched", "discard", rid)
    assert again.exit_code == 1
    assert f"review item {rid} is discarded: it cannot be discarded" in again.output


def test_unmatched_unknown_id(populated: tuple[Populated, Store]) -> None:
    facts, store = populated
    for verb in ("assign", "discard"):
        result = lisgw(facts.url, "unmatched", verb, "404")
        assert result.exit_code == 1
        assert "no review item 404" in result.output
    assert store.run_sync(work.audit_trail, entity="review") == []
