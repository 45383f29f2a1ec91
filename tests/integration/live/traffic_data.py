"""Builders of a populated store for the tail and top tests: analyzer traffic, HIS orders,
outbox deliveries and the gateway's live state, written through the real store units.

The records, messages, names and sample IDs are invented (no corpus data, no real patient):
an ASTM E1394 result transfer shaped like a chemistry analyzer's (H, P, O, R, L), an HL7
v2.5 ORM^O01 from the HIS with its ACK, and an ORU^R01 for the outbox.
"""

from __future__ import annotations

from dataclasses import replace

import sqlalchemy as sa

from lisgw.astm.frames import build_frames
from lisgw.routing import RoutingOutcome
from lisgw.store import work
from lisgw.store.records import ConnectionState, Direction, FrameIn, MessageState, OutboxRow
from lisgw.store.status import LineStatus, NodeStatus, publish_status
from tests.integration.store.factories import payload, results_message, store_message

PATIENT = "DOE^JANE"
ANALYZER = "c311"
OTHER = "xn-1"
HIS_ORDERS = "his-orders"


def astm_records(sample_id: str = "S0001", value: str = "5.4") -> bytes:
    """One result message, CR after each record (E1394 §5)."""
    records = [
        "H|\\^&|||c311^1.0^SN123|||||host|RSUPL^BATCH|P|1",
        f"P|1||PID0001||{PATIENT}||19800101|F",
        f"O|1|{sample_id}||^^^GLU|R",
        f"R|1|^^^GLU|{value}|mmol/L||N||F",
        "L|1|N",
    ]
    return "".join(record + "\r" for record in records).encode("latin-1")


def add_astm_transfer(
    conn: sa.Connection,
    at: float,
    *,
    connection: str = ANALYZER,
    sample_id: str = "S0001",
    value: str = "5.4",
    max_text: int = 24,
) -> int:
    """One transfer as the gateway archives it: its frames (split every ``max_text`` bytes
    so that records span ETB frames, as cobas analyzers do) and its message; the session."""
    session = work.open_session(conn, connection, protocol="astm", peer="10.0.0.9:4001", now=at)
    text = astm_records(sample_id, value)
    frames = [frame[:-2] for frame in build_frames(text, max_text=max_text)]  # no CR LF
    batch = [
        FrameIn(session.id, seq, Direction.IN, data, at + seq / 1000)
        for seq, data in enumerate(frames, 1)
    ]
    work.append_frames(conn, batch)
    work.save_message(
        conn,
        text,
        direction=Direction.IN,
        protocol="astm",
        kind="results",
        now=at + 0.5,
        connection=connection,
        session_id=session.id,
        state=MessageState.ROUTED,
    )
    work.close_session(conn, session.id, reason="eot", now=at + 0.5)
    return session.id


def orm(placer: str = "ORD1", sample_id: str = "S0001") -> bytes:
    segments = [
        "MSH|^~\\&|HIS|WARD|LISGW|LAB|20261122100000||ORM^O01|MSG1|P|2.5",
        f"PID|1||PID0001||{PATIENT}||19800101|F",
        f"ORC|NW|{placer}",
        f"OBR|1|{placer}||GLU^Glucose|||||||||||{sample_id}",
    ]
    return "\r".join(segments).encode() + b"\r"


def add_his_order(conn: sa.Connection, at: float) -> None:
    """An ORM^O01 in and its ACK out, archived as the HIS listener does."""
    session = work.open_session(conn, HIS_ORDERS, protocol="hl7", peer="10.0.0.2:5000", now=at)
    ack = b"MSH|^~\\&|LISGW|LAB|HIS|WARD|20261122100001||ACK^O01|L1.2|P|2.5\rMSA|AA|MSG1\r"
    work.append_frames(
        conn,
        [
            FrameIn(session.id, 1, Direction.IN, orm(), at),
            FrameIn(session.id, 2, Direction.OUT, ack, at + 0.01),
        ],
    )
    work.save_message(
        conn,
        orm(),
        direction=Direction.IN,
        protocol="hl7",
        kind="orders",
        now=at,
        connection=HIS_ORDERS,
        session_id=session.id,
        state=MessageState.PROCESSED,
    )


def oru(sample_id: str) -> bytes:
    segments = [
        "MSH|^~\\&|LISGW|LAB|HIS|WARD|20261122100005||ORU^R01|C1|P|2.5",
        f"PID|1||PID0001||{PATIENT}",
        f"OBR|1|ORD1||GLU|||||||||||{sample_id}",
        "OBX|1|NM|GLU^Glucose||5.4|mmol/L|||||F",
    ]
    return "\r".join(segments).encode() + b"\r"


def add_outbox_row(conn: sa.Connection, sample_id: str, at: float) -> OutboxRow:
    """One ORU^R01 waiting for the HIS (results of ``ANALYZER``)."""
    stored = store_message(conn, results_message(sample_id), at)
    row = replace(
        payload(sample_id, [f"{sample_id}-{at}"]), payload=oru(sample_id), connection=ANALYZER
    )
    saved = work.save_routed_results(conn, stored.id, RoutingOutcome(()), [row], at)
    return saved.outbox[0]


def publish(
    conn: sa.Connection,
    now: float,
    *,
    state: ConnectionState = ConnectionState.CONNECTED,
    heartbeat_at: float | None = None,
    stopped_at: float | None = None,
    errors: int = 0,
    last_error: str = "",
) -> None:
    """The gateway's live state: node ``gw1`` and the ``ANALYZER`` line."""
    node = NodeStatus("gw1", 4242, "0.1.0", now - 3600, heartbeat_at or now, stopped_at)
    line = LineStatus(
        ANALYZER, "gw1", state, "10.0.0.9:4001", now - 600, now - 5, 2, errors, last_error, now
    )
    publish_status(conn, node, [line], now)
