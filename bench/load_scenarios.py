"""The scenarios of bench/load.py: connections, throughput, latency, host queries.

Layer: benchmark (asyncio). Each scenario gets a ``Run`` (a gateway already started by
bench/load.py, its HIS, the analyzers' port) and prints its figure lines; see bench/load.py's
docstring for what each one measures and its target.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.load_parts import (
    AnalyzerClient,
    GatewayProcess,
    HisServer,
    cbc_template,
    percentile,
    query_frames,
    sample_id,
    session_frames,
)

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["SCENARIO_FUNCTIONS", "Run", "analyzer_name", "cbc_template", "ms", "peer"]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def spread(values: Sequence[float]) -> str:
    """``p50 X ms, p99 Y ms`` of latencies in seconds."""
    return f"p50 {ms(percentile(values, 0.5))}, p99 {ms(percentile(values, 0.99))}"


def peer(index: int) -> str:
    """Analyzer ``index`` (0-based) connects from its own loopback address."""
    return f"127.0.{1 + index // 250}.{1 + index % 250}"


def analyzer_name(index: int) -> str:
    return f"an{index + 1:03d}"


@dataclass
class Run:
    """A started gateway with its HIS and analyzers' addresses (``run_scenario``)."""

    args: argparse.Namespace
    backend: Any
    his: HisServer
    gateway: GatewayProcess
    port: int
    tag: str
    template: list[bytes]
    numbers: Any = None

    def next_sample(self) -> str:
        if self.numbers is None:
            self.numbers = iter(range(1, 10**8))
        return sample_id(self.tag, next(self.numbers))

    async def clients(self, count: int) -> list[AnalyzerClient]:
        return list(
            await asyncio.gather(
                *(
                    AnalyzerClient.connect(analyzer_name(i), self.port, peer(i))
                    for i in range(count)
                )
            )
        )

    def frames(self, sample: str) -> list[bytes]:
        return session_frames(self.template, sample, "PT" + sample[4:])


# -- the scenarios ---------------------------------------------------------------------------


async def connections(run: Run, count: int) -> None:
    """Hold ``count`` connections, then each sends one session; all served?"""
    clients = await run.clients(count)
    await asyncio.sleep(run.args.hold)
    alive = [c for c in clients if await c.alive()]
    print(f"  connections held: {len(alive)}/{count} after {run.args.hold:.0f} s")
    samples = [run.next_sample() for _ in clients]
    outcomes = await asyncio.gather(
        *(c.send(run.frames(s)) for c, s in zip(clients, samples, strict=True)),
        return_exceptions=True,
    )
    eot = {s: o for s, o in zip(samples, outcomes, strict=True) if isinstance(o, float)}
    print(f"  sessions ACKed: {len(eot)}/{count}")
    await run.his.wait_for(len(eot), 120)
    delivered = [run.his.acked[s] - eot[s] for s in eot if s in run.his.acked]
    print(f"  sessions delivered to the HIS: {len(delivered)}/{count}")
    print(f"  EOT -> HIS ACK: {spread(delivered)}")
    still = [c for c in clients if await c.alive()]
    print(f"  connections open at the end: {len(still)}/{count}")
    await asyncio.gather(*(c.close() for c in clients))


async def throughput(run: Run, count: int) -> None:
    """``count`` analyzers back to back for warm-up + ``--seconds``."""
    clients = await run.clients(count)
    warmup, seconds = run.args.warmup, run.args.seconds
    start = time.perf_counter()
    window = (start + warmup, start + warmup + seconds)
    eot: dict[str, float] = {}

    async def loop(client: AnalyzerClient) -> None:
        while time.perf_counter() < window[1]:
            sample = run.next_sample()
            eot[sample] = await client.send(run.frames(sample))

    failures = [
        r for r in await asyncio.gather(*(loop(c) for c in clients), return_exceptions=True) if r
    ]
    in_window = [s for s, at in eot.items() if window[0] <= at < window[1]]
    frames = len(in_window) * len(run.frames(run.next_sample()))
    acks = [x for c in clients for x in c.stats.ack_latencies]
    print(
        f"  sessions ACKed: {len(in_window) / seconds:.1f} sessions/s, {frames / seconds:.0f} "
        f"frames/s ({seconds:.0f} s after {warmup:.0f} s warm-up)"
    )
    print(f"  frame ENQ/frame -> ACK: {spread(acks)}; NAKs {sum(c.stats.naks for c in clients)}")
    delivered = sum(1 for s in in_window if run.his.acked.get(s, window[1] + 1) <= window[1])
    in_window_his = sum(1 for at in run.his.acked.values() if window[0] <= at < window[1])
    print(
        f"  sessions delivered to the HIS in the window: {in_window_his / seconds:.1f} "
        f"sessions/s ({in_window_his * 40 / seconds:.0f} results/s)"
    )
    drain_from = time.perf_counter()
    ok = await run.his.wait_for(len(eot), run.args.drain)
    drained = time.perf_counter() - drain_from
    lat = [run.his.acked[s] - eot[s] for s in in_window if s in run.his.acked]
    print(
        f"  backlog at the end: {len(eot) - run.his.messages} session(s), drained "
        f"{'in' if ok else 'NOT within'} {drained:.1f} s; {delivered} of the window's "
        "sessions delivered within it"
    )
    print(f"  EOT -> HIS ACK: {spread(lat)}")
    if failures:
        print(f"  analyzer failures: {len(failures)}, first: {failures[0]}")
    await asyncio.gather(*(c.close() for c in clients))


async def latency(run: Run, count: int) -> None:
    """``count`` analyzers, each one session every ``1/--rate`` s, staggered."""
    clients = await run.clients(count)
    period = 1.0 / run.args.rate
    warmup, seconds = run.args.warmup, run.args.seconds
    start = time.perf_counter()
    eot: dict[str, float] = {}

    async def paced(index: int, client: AnalyzerClient) -> None:
        due = start + period * index / count
        while due < start + warmup + seconds:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            sample = run.next_sample()
            at = await client.send(run.frames(sample))
            if at >= start + warmup:
                eot[sample] = at
            due += period

    failures = [
        r
        for r in await asyncio.gather(
            *(paced(i, c) for i, c in enumerate(clients)), return_exceptions=True
        )
        if r
    ]
    await run.his.wait_for(
        run.his.messages + len([s for s in eot if s not in run.his.acked]), run.args.drain
    )
    lat = [run.his.acked[s] - eot[s] for s in eot if s in run.his.acked]
    acks = [x for c in clients for x in c.stats.ack_latencies]
    print(
        f"  sessions measured: {len(eot)} ({len(eot) / seconds:.1f} sessions/s over "
        f"{seconds:.0f} s), delivered {len(lat)}"
    )
    print(f"  EOT -> HIS ACK: {spread(lat)}, max {ms(max(lat, default=0))}")
    print(f"  frame ENQ/frame -> ACK: {spread(acks)}")
    if failures:
        print(f"  analyzer failures: {len(failures)}, first: {failures[0]}")
    await asyncio.gather(*(c.close() for c in clients))


async def query(run: Run, count: int) -> None:
    """Host queries for known samples (and one in ten unknown), paced per analyzer."""
    if not (ROOT / "lisgw" / "services" / "responder.py").exists():
        print("  host-query reply: PENDING (lisgw/services/responder.py is not in this tree)")
        return
    clients = await run.clients(count)
    period = 1.0 / run.args.query_rate
    warmup, seconds = run.args.warmup, run.args.seconds
    start = time.perf_counter()
    to_enq: list[float] = []
    to_eot: list[float] = []
    replies = {"orders": 0, "none": 0}
    picker = random.Random(6)

    async def paced(index: int, client: AnalyzerClient) -> None:
        due = start + period * index / count
        while due < start + warmup + seconds:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            known = picker.random() >= 0.1
            # Orders are numbered 1..N, order i queued for analyzer i % count.
            number = picker.randrange(index or count, run.args.orders + 1, count)
            sample = f"Q{number:09d}" if known else f"UNKNOWN{picker.randrange(10**6):06d}"
            sent = await client.send(query_frames(client.name.upper(), [sample]))
            enq_at, eot_at, frames = await client.receive_reply()
            if sent >= start + warmup:
                to_enq.append(enq_at - sent)
                to_eot.append(eot_at - sent)
                body = b"".join(frames)
                # a reply with orders lists the queued test (WBC); "no orders" lists none
                replies["orders" if b"WBC" in body else "none"] += 1
            due += period

    failures = [
        r
        for r in await asyncio.gather(
            *(paced(i, c) for i, c in enumerate(clients)), return_exceptions=True
        )
        if r
    ]
    print(
        f"  queries measured: {len(to_eot)} ({len(to_eot) / seconds:.1f}/s); replies with "
        f"orders {replies['orders']}, without {replies['none']}"
    )
    print(f"  query EOT -> host ENQ: {spread(to_enq)}")
    print(f"  query EOT -> reply EOT: {spread(to_eot)}")
    if failures:
        print(f"  analyzer failures: {len(failures)}, first: {failures[0]}")
    await asyncio.gather(*(c.close() for c in clients))


SCENARIO_FUNCTIONS = {
    "connections": connections,
    "throughput": throughput,
    "latency": latency,
    "query": query,
}
