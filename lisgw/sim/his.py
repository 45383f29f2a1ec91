"""A small HIS for tests and demos: an MLLP server that acknowledges (or not) what it receives.

Layer: simulator (Twisted). Listens with lisgw.transports.mllp, answers each message with an
HL7 original-mode ACK built by lisgw.hl7.build (MSA-2 echoes the message's MSH-10), and
records every message it received, in order, with the code it answered.

What it answers is ``mode`` (changeable at any time) unless a script of modes was queued with
``script()``, which is used first, one mode per message:

* ``AA``, ``AE``, ``AR`` (and the enhanced-mode ``CA``, ``CE``, ``CR``): that code, with
  ``ack_text`` in MSA-3;
* ``SILENT``: no answer at all (the sender's ACK timeout);
* ``GARBAGE``: a reply that is not an ACK (an ADT^A01), as a confused HIS might send.

``delay`` (seconds, changeable at any time) holds every answer back, as a slow HIS does.
``stop()`` closes the listening port *and* every open connection, then waits until they are
closed; ``start()`` listens again on the same port, so a HIS can go down for the night and come
back at the same address. A message that cannot be parsed as HL7 gets no answer.

The other direction, orders: ``order_message`` builds an ORM^O01 or OML^O21 (new order, an
invented patient) and ``send_order`` sends one to the gateway's order listener over MLLP and
returns the ACK it got.
"""

from __future__ import annotations

import enum
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IListeningPort, IReactorTCP, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from lisgw.errors import CodecError, LocalProtocolError
from lisgw.his.ack import AckOutcome, read_ack
from lisgw.hl7.build import build_ack
from lisgw.hl7.message import Hl7Message, parse_message
from lisgw.hl7.mllp import MllpMessage
from lisgw.transports.mllp import MllpLink, MllpServerFactory, MllpSettings, connect_mllp
from lisgw.transports.tls import TlsMaterial, server_endpoint

__all__ = ["AckMode", "HisSimulator", "Received", "order_message", "send_order"]

_log = Logger()


class AckMode(enum.StrEnum):
    ACCEPT = "AA"
    ERROR = "AE"
    REJECT = "AR"
    COMMIT_ACCEPT = "CA"
    COMMIT_ERROR = "CE"
    COMMIT_REJECT = "CR"
    SILENT = "silent"
    GARBAGE = "garbage"


@dataclass(frozen=True, slots=True)
class Received:
    """One message the simulator received: its payload, MSH-10, and what it answered."""

    payload: bytes
    control_id: str
    message_type: str
    peer: str
    at: float
    answer: AckMode


class HisSimulator:
    """An MLLP server playing the HIS (module docstring)."""

    def __init__(
        self,
        reactor: IReactorTCP,
        *,
        clock: IReactorTime,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: TlsMaterial | None = None,
        mode: AckMode = AckMode.ACCEPT,
        ack_text: str = "",
        settings: MllpSettings | None = None,
        delay: float = 0.0,
    ) -> None:
        self.reactor = reactor
        self.clock = clock
        self.host = host
        self.port = port
        self.tls = tls
        self.mode = mode
        self.ack_text = ack_text
        self.delay = delay
        self.on_received: Callable[[Received], None] | None = None  # called for each message
        self.received: list[Received] = []
        self._script: deque[AckMode] = deque()
        self._factory = MllpServerFactory(
            self, clock=clock, settings=settings or MllpSettings(), name="his-simulator"
        )
        self._listening: IListeningPort | None = None
        self._control_ids = itertools.count(1)
        self._waiters: list[tuple[int, Deferred[None]]] = []

    @property
    def running(self) -> bool:
        return self._listening is not None

    def script(self, modes: Iterable[AckMode]) -> None:
        """Answer the next messages with these modes, one each, before ``mode`` applies again."""
        self._script.extend(modes)

    def control_ids(self) -> list[str]:
        """MSH-10 of every message received, in order."""
        return [r.control_id for r in self.received]

    async def start(self) -> int:
        """Listen (again on the same port once one was chosen); return the port."""
        if self._listening is not None:
            raise LocalProtocolError("the HIS simulator is already listening")
        endpoint = server_endpoint(self.reactor, host=self.host, port=self.port, tls=self.tls)
        self._listening = await endpoint.listen(self._factory)
        self.port = self._listening.getHost().port  # type: ignore[attr-defined]
        _log.info("HIS simulator listening on {host}:{port}", host=self.host, port=self.port)
        return self.port

    async def stop(self) -> None:
        """Stop listening and close every connection; returns once all are closed."""
        listening, self._listening = self._listening, None
        if listening is not None:
            await maybeDeferred(listening.stopListening)
        await self._factory.close_connections()
        _log.info("HIS simulator on port {port} stopped", port=self.port)

    def wait_for(self, count: int) -> Deferred[None]:
        """Fires once at least ``count`` messages were received."""
        if len(self.received) >= count:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiters.append((count, waiter))
        return waiter

    # -- lisgw.transports.mllp.MllpHandler

    def connection_opened(self, link: MllpLink) -> None:
        """Nothing to prepare: the simulator keeps no per-connection state."""

    def connection_closed(self, link: MllpLink, reason: str) -> None:
        """Nothing to clean up."""

    def handle_message(self, message: MllpMessage, link: MllpLink) -> Deferred[bytes | None]:
        peer = link.peer
        mode = self._script.popleft() if self._script else self.mode
        try:
            original = parse_message(message.payload, lenient=True)
        except CodecError:
            self._record(message.payload, "", "", peer, AckMode.SILENT)
            return succeed(None)
        self._record(message.payload, original.control_id, original.message_type, peer, mode)
        if mode is AckMode.SILENT:
            return succeed(None)
        if self.delay > 0:
            return deferLater(self.clock, self.delay, self._answer, original, mode)
        return succeed(self._answer(original, mode))

    def _answer(self, original: Hl7Message, mode: AckMode) -> bytes:
        now = datetime.fromtimestamp(self.clock.seconds(), UTC).strftime("%Y%m%d%H%M%S")
        control_id = f"SIM{next(self._control_ids)}"
        if mode is AckMode.GARBAGE:
            garbage = f"MSH|^~\\&|HIS||LISGW||{now}||ADT^A01|{control_id}|P|2.5.1\rEVN|A01|{now}\r"
            return garbage.encode("ascii")
        return build_ack(
            original, mode.value, self.ack_text, control_id=control_id, now_timestamp=now
        )

    def _record(
        self, payload: bytes, control_id: str, message_type: str, peer: str, mode: AckMode
    ) -> None:
        received = Received(payload, control_id, message_type, peer, self.clock.seconds(), mode)
        self.received.append(received)
        if self.on_received is not None:
            self.on_received(received)
        ready = [w for w in self._waiters if w[0] <= len(self.received)]
        self._waiters = [w for w in self._waiters if w[0] > len(self.received)]
        for _, waiter in ready:
            waiter.callback(None)


def order_message(
    placer: str, sample: str, codes: Sequence[str], *, kind: str = "ORM", patient: str = ""
) -> bytes:
    """A new order (ORC-1 ``NW``) for ``sample``: one ORC/OBR pair per test code, as HISs
    send them; ``kind`` ``ORM`` (ORM^O01) or ``OML`` (OML^O21, with the sample in SPM-2).
    The patient is invented (``patient`` names the placeholder, default from ``placer``)."""
    if kind not in ("ORM", "OML"):
        raise LocalProtocolError(f"order kind {kind!r}: ORM or OML")
    if not codes:
        raise LocalProtocolError("an order names at least one test code")
    for what, value in (("placer", placer), ("sample", sample), *(("test", c) for c in codes)):
        if not value or any(ch in value for ch in "|^~\\&\r\n"):
            raise LocalProtocolError(f"{what} {value!r} is empty or holds an HL7 delimiter")
    patient = patient or f"PATIENT{placer}"
    structure = "ORM^O01^ORM_O01" if kind == "ORM" else "OML^O21^OML_O21"
    lines = [
        f"MSH|^~\\&|HIS|WARD|LISGW|LAB|20260101115900||{structure}|{kind}{placer}|P|2.5.1",
        f"PID|1||PAT{placer}^^^HIS^MR||DEMO^{patient}||19800101|F",
    ]
    for index, code in enumerate(codes, 1):
        lines.append(f"ORC|NW|{placer}|||||||20260101115800")
        if kind == "ORM":
            lines.append(f"OBR|{index}|{placer}|{sample}|{code}^{code}^L|||20260101115000")
        else:
            lines.append(f"OBR|{index}|{placer}||{code}^{code}^L|||20260101115000")
            lines.append(f"SPM|1|{sample}||BLD")
    return "".join(line + "\r" for line in lines).encode("ascii")


async def send_order(
    reactor: Any, host: str, port: int, message: bytes, *, timeout: float = 10.0
) -> AckOutcome:
    """Send one order message to the gateway's order listener; the ACK it answered.
    Connection errors and the ACK timeout (lisgw.transports.mllp.MllpTimeout) propagate."""
    endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
    client = await connect_mllp(endpoint, clock=reactor)
    try:
        reply = await client.request(message, timeout=timeout)
    finally:
        await client.close()
    return read_ack(reply.payload)
