"""``lisgw simulate his``: the HIS simulator (lisgw.sim.his) on its own, for field debugging.

Layer: interface. Listens for results and answers as told (``--ack``, ``--delay``, down
periods), prints one line per message received — type, control ID, sample (OBR-3), OBX count,
answer; the whole message only with ``-v`` (it holds patient data) — and sends orders to a
gateway's order listener, printing the ACK each got. The summary counts both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from lisgw.errors import CodecError
from lisgw.hl7.message import parse_message
from lisgw.sim.his import AckMode, HisSimulator, Received, order_message, send_order

__all__ = ["HisCommand"]

_MODES = {"AA": AckMode.ACCEPT, "AE": AckMode.ERROR, "AR": AckMode.REJECT, "none": AckMode.SILENT}


class HisCommand:
    """One ``simulate his`` run: its options, what happened, the summary."""

    def __init__(
        self,
        *,
        host: str,
        port: int | None,
        ack: str,
        delay: float,
        down: Sequence[tuple[float, float]],
        exit_after: int | None,
        verbose: bool,
    ) -> None:
        self.host = host
        self.port = port
        self.mode = _MODES[ack]
        self.delay = delay
        self.down = list(down)
        self.exit_after = exit_after
        self.verbose = verbose
        self.his: HisSimulator | None = None
        self.orders_sent = 0
        self.orders_accepted = 0
        self._finished: Deferred[None] = Deferred()

    async def main(
        self,
        reactor: Any,
        target: tuple[str, int] | None,
        samples: Sequence[str],
        tests: Sequence[str],
        kind: str,
    ) -> int:
        if self.port is not None:
            his = HisSimulator(
                reactor, clock=reactor, host=self.host, port=self.port, mode=self.mode,
                delay=self.delay,
            )  # fmt: skip
            his.on_received = self._received
            self.his = his
            port = await his.start()
            click.echo(f"HIS simulator listening on {self.host}:{port} (answers {self._answers()})")
            for after, length in self.down:
                Deferred.fromCoroutine(self._outage(reactor, after, length))
        status = 0
        if target is not None:
            status = await self._send_orders(reactor, target, samples, tests, kind)
        if self.his is None:
            return status
        try:
            await self._finished  # --exit-after, or Ctrl-C stops the reactor
        finally:
            await self.his.stop()
        return status

    def _answers(self) -> str:
        text = "nothing" if self.mode is AckMode.SILENT else self.mode.value
        return f"{text} after {self.delay:g} s" if self.delay else text

    async def _outage(self, reactor: Any, after: float, length: float) -> None:
        await deferLater(reactor, after, lambda: None)
        if self.his is None or self._finished.called:
            return
        await self.his.stop()
        click.echo(f"HIS down for {length:g} s")
        await deferLater(reactor, length, lambda: None)
        if not self._finished.called:
            await self.his.start()
            click.echo("HIS up again")

    async def _send_orders(
        self,
        reactor: Any,
        target: tuple[str, int],
        samples: Sequence[str],
        tests: Sequence[str],
        kind: str,
    ) -> int:
        host, port = target
        status = 0
        for number, sample in enumerate(samples, 1):
            message = order_message(f"CLI{number:04d}", sample, tests, kind=kind)
            ack = await send_order(reactor, host, port, message)
            self.orders_sent += 1
            self.orders_accepted += ack.accepted
            reason = f" ({ack.text})" if ack.text else ""
            click.echo(
                f"order sent: {kind} sample {sample} ({', '.join(tests)}) to {host}:{port}: "
                f"{ack.code}{reason}"
            )
            status = status or (0 if ack.accepted else 1)
        return status

    def _received(self, message: Received) -> None:
        answer = "nothing" if message.answer is AckMode.SILENT else message.answer.value
        sample, results = "-", 0
        try:
            parsed = parse_message(message.payload, lenient=True)
            obr = parsed.segment("OBR")
            sample = obr.get(3).strip() if obr is not None else "-"
            results = len(parsed.segments("OBX"))
        except CodecError:
            answer = "nothing (not HL7)"
        click.echo(
            f"received {message.message_type or '?'} control id {message.control_id or '-'} "
            f"from {message.peer}: sample {sample or '-'}, {results} OBX; answered {answer}"
        )
        if self.verbose:
            click.echo(message.payload.decode("utf-8", "replace").replace("\r", "\n"))
        limit, his = self.exit_after, self.his
        reached = limit is not None and his is not None and len(his.received) >= limit
        if reached and not self._finished.called:
            self._finished.callback(None)

    def summary(self) -> None:
        his = self.his
        lines = []
        if his is not None:
            answers: dict[str, int] = {}
            for message in his.received:
                key = "none" if message.answer is AckMode.SILENT else message.answer.value
                answers[key] = answers.get(key, 0) + 1
            shown = ", ".join(f"{code} {count}" for code, count in sorted(answers.items()))
            lines.append(f"messages received: {len(his.received)} ({shown or 'none'})")
        if self.orders_sent:
            lines.append(f"orders sent: {self.orders_sent}, accepted: {self.orders_accepted}")
        click.echo("summary: " + "; ".join(lines or ["nothing happened"]))
