"""What goes out to an analyzer: one sample's queued tests, grouped from the order queue.

Layer: domain (pure). ``Queued`` is the shape of a queue row the builders read (the store's
``lisgw.store.records.QueuedTest`` has it); ``group_by_sample`` turns queue rows into one
``SampleOrders`` per sample, in the order the samples were asked for (a host query) or first
queued (a download). A sample asked for that has no queued test gets a ``SampleOrders`` with
no tests: the builders answer "no orders" for it in the analyzer's form.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["OrderedTest", "Queued", "SampleOrders", "astm_priority", "group_by_sample"]


class Queued(Protocol):
    """A queued order test as the store returns it (lisgw.store.records.QueuedTest)."""

    @property
    def queue_id(self) -> int: ...
    @property
    def analyzer_code(self) -> str: ...
    @property
    def placer(self) -> str: ...
    @property
    def sample_id(self) -> str: ...
    @property
    def priority(self) -> str: ...
    @property
    def patient_id(self) -> str: ...
    @property
    def patient_name(self) -> str: ...
    @property
    def ordered_at(self) -> str: ...


@dataclass(frozen=True, slots=True)
class OrderedTest:
    """One test to send: the analyzer's code and the order_queue rows it stands for (the
    same code ordered twice for one sample is sent once)."""

    code: str
    queue_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SampleOrders:
    """One sample's tests for the analyzer; no tests means "no orders for this sample"."""

    sample_id: str
    tests: tuple[OrderedTest, ...] = ()
    priority: str = ""
    placer: str = ""
    patient_id: str = ""
    patient_name: str = ""  # HIS form: FAMILY^GIVEN
    ordered_at: str = ""

    @property
    def queue_ids(self) -> tuple[int, ...]:
        return tuple(queue_id for test in self.tests for queue_id in test.queue_ids)


def astm_priority(priority: str) -> str:
    """E1394 §9.4.6 priority (S stat, A ASAP, R routine) of an HIS priority (HL7 table 0027
    uses the same letters; anything else is routine)."""
    letter = priority.strip()[:1].upper()
    return letter if letter in ("S", "A", "R") else "R"


def group_by_sample(
    queued: Iterable[Queued], asked: Sequence[str] | None = None
) -> list[SampleOrders]:
    """One SampleOrders per sample: the ``asked`` ones in that order (those with nothing
    queued get no tests), else every queued sample in queue order. A test queued twice
    under two orders of the same sample is sent once."""
    by_sample: dict[str, list[Queued]] = {}
    for row in queued:
        by_sample.setdefault(row.sample_id, []).append(row)
    samples = list(dict.fromkeys(asked)) if asked is not None else list(by_sample)
    grouped: list[SampleOrders] = []
    for sample_id in samples:
        rows = by_sample.get(sample_id, [])
        if not rows:
            grouped.append(SampleOrders(sample_id))
            continue
        first = rows[0]
        codes: dict[str, list[int]] = {}
        for row in rows:
            codes.setdefault(row.analyzer_code, []).append(row.queue_id)
        grouped.append(
            SampleOrders(
                sample_id=sample_id,
                tests=tuple(OrderedTest(code, tuple(ids)) for code, ids in codes.items()),
                priority=first.priority,
                placer=first.placer,
                patient_id=first.patient_id,
                patient_name=first.patient_name,
                ordered_at=first.ordered_at,
            )
        )
    return grouped
