"""Result pipeline throughput: from "message committed" to "HIS ACK received", and frame commits.

Prints the machine, then, on SQLite (a file in a temporary directory, WAL, synchronous=FULL:
durability on) and on PostgreSQL (a fresh database on LISGW_BENCH_PG_URL, default the CI
server; skipped with a note when unreachable):

1. pipeline: analyzer messages stored as live ingest stores them at EOT
   (lisgw.services.pipeline.store_transfer: message kept, results routed, ORU^R01 built and
   queued in the outbox, one transaction each) while the outbox dispatcher
   (lisgw.services.outbox) delivers them over MLLP on loopback to the HIS simulator
   (lisgw.sim.his, ACKing AA). Reported: results/s and ORU/s from the first commit to the
   last delivery recorded in the store, the commit rate alone, and the latency from each
   message's commit to its arrival at the HIS (p50/p99). Two shapes: CBC messages (the
   Sysmex XN-550 capture of ../shared/corpus, 41 results, one ORU each) and one-result
   messages (one ORU per result: the dispatcher's worst case). The dispatcher runs as
   ``lisgw run`` runs it (one MLLP connection, batches of 50) and with 4 connections.
2. frame commits: 240-byte frames made durable through the FrameJournal by 16 links that
   each wait for their commit before the next frame (as E1381 links do): group commit
   (every waiting frame in one transaction) against one commit per frame (``max_batch=1``),
   and one link alone.

Target (issue 5): >= 1,000 results/s delivered with durability on. Run:
``.venv/bin/python bench/pipeline.py [--cbc N] [--single N] [--frames N]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from twisted.internet import reactor as global_reactor  # noqa: E402
from twisted.internet.defer import Deferred, gatherResults  # noqa: E402
from twisted.internet.task import deferLater, react  # noqa: E402

from lisgw.astm.frames import build_frames  # noqa: E402
from lisgw.drivers import default_catalogue  # noqa: E402
from lisgw.drivers.mapping import TestCodeMap  # noqa: E402
from lisgw.errors import StoreError  # noqa: E402
from lisgw.his.profile import HisProfile  # noqa: E402
from lisgw.routing import RoutingConfig  # noqa: E402
from lisgw.services.journal import FrameJournal  # noqa: E402
from lisgw.services.outbox import DispatcherSettings, OutboxDispatcher  # noqa: E402
from lisgw.services.pipeline import (  # noqa: E402
    Decoded,
    IngestContext,
    TransferReader,
    store_transfer,
)
from lisgw.sim.analyzer import capture_messages  # noqa: E402
from lisgw.sim.his import HisSimulator  # noqa: E402
from lisgw.store import migrate, work  # noqa: E402
from lisgw.store.database import describe, make_engine  # noqa: E402
from lisgw.store.records import OutboxState  # noqa: E402
from lisgw.store.runner import Store  # noqa: E402
from lisgw.transports.tls import client_endpoint  # noqa: E402

REACTOR: Any = global_reactor
CORPUS = ROOT.parent / "shared" / "corpus"
CAPTURE = CORPUS / "astm" / "sysmex_xn550" / "sysmex_xn550_cbc_results.bin"
PG_URL = os.environ.get("LISGW_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CONNECTION = "xn-550"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                cpu,
            )
    except OSError:
        pass
    return (
        f"{platform.node()} | {cpu} | {os.cpu_count()} cores | "
        f"Python {platform.python_version()} | SQLite {sqlite3.sqlite_version} | "
        f"{platform.system()} {platform.release()} | temp dir {tempfile.gettempdir()}"
    )


# -- backends ------------------------------------------------------------------------------


class Backend:
    """A fresh, migrated store; ``close`` removes it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._admin: sa.Engine | None = None
        self._database = ""
        if kind == "sqlite":
            self._dir = tempfile.TemporaryDirectory(prefix="lisgw-bench-")
            self.url = f"sqlite:///{self._dir.name}/lisgw.sqlite"
        else:
            self._admin = make_engine(PG_URL, isolation_level="AUTOCOMMIT")
            self._database = f"lisgw_bench_{uuid.uuid4().hex[:12]}"
            with self._admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{self._database}"')
            url = make_url(PG_URL).set(database=self._database)
            self.url = url.render_as_string(hide_password=False)
        engine = make_engine(self.url)
        migrate.upgrade(engine)
        self.store = Store(engine, reactor=REACTOR)

    def close(self) -> None:
        self.store.close()
        if self._dir is not None:
            self._dir.cleanup()
        if self._admin is not None:
            with self._admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self._database}" WITH (FORCE)')
            self._admin.dispose()

    def describe(self) -> str:
        if self.kind == "sqlite":
            return "SQLite (WAL, synchronous=FULL)"
        with self.store.engine.connect() as conn:
            version = conn.exec_driver_sql("SHOW server_version").scalar_one()
        return f"PostgreSQL {version} ({describe(PG_URL)})"


# -- messages ------------------------------------------------------------------------------


def sessions(count: int, *, single_result: bool, prefix: str) -> list[list[Decoded]]:
    """``count`` decoded XN-550 messages, each with its own sample ID (and one R record
    only when ``single_result``), as live ingest decodes them at EOT."""
    template = capture_messages(CAPTURE.read_bytes())[0]
    if single_result:
        first_r = next(i for i, r in enumerate(template) if r.startswith(b"R|"))
        template = tuple(
            r for i, r in enumerate(template) if not r.startswith(b"R|") or i == first_r
        )
    reader = TransferReader(
        default_catalogue(), protocol="astm", driver="sysmex-xn", encoding="latin-1", tz=None
    )
    decoded = []
    for index in range(count):
        records = [_with_sample(record, f"{prefix}{index:06d}") for record in template]
        decoded.append(reader.astm(records, ended=True))
    return decoded


def _with_sample(record: bytes, sample: str) -> bytes:
    if not record.startswith(b"O|"):
        return record
    fields = record.split(b"|")
    components = fields[3].split(b"^")
    components[2] = sample.encode("ascii")
    fields[3] = b"^".join(components)
    return b"|".join(fields)


def context() -> IngestContext:
    codes = TestCodeMap.load(ROOT / "config" / "test-codes.example.yaml")
    profile = HisProfile.load(ROOT / "config" / "his" / "hl7-v251.yaml")
    return IngestContext(CONNECTION, profile, RoutingConfig(send_unsolicited=True), codes)


# -- 1. the pipeline -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PipelineFigures:
    """One run: ``commit_elapsed`` the time to store every message, ``deliver_elapsed`` the
    time from the dispatcher's start (drain) or the first commit (live) to the last delivery
    recorded; latencies from each message's commit to its arrival at the HIS."""

    messages: int
    results: int
    commit_elapsed: float
    deliver_elapsed: float
    latencies: Sequence[float]

    def line(self, label: str, *, latency: bool) -> str:
        text = (
            f"  {label:<40} {self.results / self.deliver_elapsed:>8,.0f} results/s "
            f"{self.messages / self.deliver_elapsed:>6,.0f} ORU/s | commits "
            f"{self.messages / self.commit_elapsed:>5,.0f} msg/s "
            f"{self.results / self.commit_elapsed:>6,.0f} results/s"
        )
        if not latency:
            return text
        ordered = sorted(self.latencies)
        p50 = statistics.median(ordered) * 1000
        p99 = ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000
        return f"{text} | commit→HIS p50 {p50:,.0f} ms p99 {p99:,.0f} ms"


async def pipeline(
    backend: Backend, messages: list[list[Decoded]], *, lanes: int, live: bool
) -> PipelineFigures:
    """Store ``messages`` and deliver them: all stored first, then the dispatcher started
    (drain), or the dispatcher running while they are stored (live)."""
    store = backend.store
    his = HisSimulator(REACTOR, clock=REACTOR)
    port = await his.start()
    dispatcher = OutboxDispatcher(
        store,
        endpoint=client_endpoint(REACTOR, host="127.0.0.1", port=port),
        clock=REACTOR,
        settings=DispatcherSettings(worker="bench", connections=lanes, poll_interval=0.02),
    )
    ingest = context()
    committed: dict[str, float] = {}
    before = (await store.run(work.outbox_counts))[OutboxState.DELIVERED]
    if live:
        await dispatcher.startService()
    started = time.perf_counter()
    results = 0
    for decoded in messages:
        stored = await store.run(
            store_transfer, decoded, ingest, session_id=None, now=REACTOR.seconds()
        )
        results += stored.results
        committed[decoded[0].message.specimens[0].sample_id] = REACTOR.seconds()
    commit_elapsed = time.perf_counter() - started
    if not live:
        started = time.perf_counter()
        await dispatcher.startService()
    while (await store.run(work.outbox_counts))[OutboxState.DELIVERED] < before + len(messages):
        await deferLater(REACTOR, 0.005, lambda: None)
    deliver_elapsed = time.perf_counter() - started
    await dispatcher.stopService()
    await his.stop()
    latencies = [r.at - committed[_sample(r.payload)] for r in his.received]
    return PipelineFigures(len(messages), results, commit_elapsed, deliver_elapsed, latencies)


def _sample(payload: bytes) -> str:
    from lisgw.hl7.message import parse_message

    obr = parse_message(payload).segment("OBR")
    return obr.get(3) if obr is not None else ""


# -- 2. frame commits ----------------------------------------------------------------------


async def frame_commits(backend: Backend, *, links: int, frames: int, max_batch: int) -> str:
    """``links`` links, ``frames`` frames each, each link waiting for its commit."""
    journal = FrameJournal(backend.store, REACTOR, max_batch=max_batch)
    text = b"".join(r + b"\r" for r in capture_messages(CAPTURE.read_bytes())[0])
    frame = build_frames(text)[0]
    run = uuid.uuid4().hex[:6]

    async def link(number: int) -> None:
        for _ in range(frames):
            await journal.commit(
                f"{run}-{number}", CONNECTION, f"peer{number}", frame, "in", REACTOR.seconds()
            )

    started = time.perf_counter()
    await gatherResults([Deferred.fromCoroutine(link(n)) for n in range(links)])
    elapsed = time.perf_counter() - started
    stats = journal.stats
    total = links * frames
    return (
        f"{total / elapsed:>8,.0f} frames/s, {stats.flushes / elapsed:>6,.0f} commits/s, "
        f"{total / stats.flushes:5.1f} frames/commit, {elapsed / total * 1e6:6.0f} µs/frame "
        f"({links} link(s) x {frames} frames of {len(frame)} bytes)"
    )


# -- main ----------------------------------------------------------------------------------


async def shapes(backend: Backend, args: argparse.Namespace, *, live: bool) -> None:
    for label, single, count, lanes in (
        ("CBC (41 results/ORU), 1 MLLP connection", False, args.cbc, 1),
        ("CBC (41 results/ORU), 4 MLLP connections", False, args.cbc, 4),
        ("1 result/ORU, 1 MLLP connection", True, args.single, 1),
        ("1 result/ORU, 4 MLLP connections", True, args.single, 4),
    ):
        prefix = f"{'L' if live else 'D'}{'S' if single else 'C'}{lanes}-"
        messages = sessions(count, single_result=single, prefix=prefix)
        figures = await pipeline(backend, messages, lanes=lanes, live=live)
        print(figures.line(label, latency=live))


async def bench_backend(kind: str, args: argparse.Namespace) -> None:
    try:
        backend = Backend(kind)
    except StoreError as error:
        print(f"{kind}: skipped: {error}")
        return
    try:
        print(backend.describe())
        print(" message committed → HIS ACK (drain: stored first, then delivered):")
        await shapes(backend, args, live=False)
        print(" live: delivered while being stored (commit-bound; latency commit → HIS):")
        await shapes(backend, args, live=True)
        print(" frame commits through the FrameJournal (durable before ACK):")
        runs: list[tuple[str, Callable[[], Deferred[str]]]] = [
            (
                "group commit, 16 links",
                lambda: Deferred.fromCoroutine(
                    frame_commits(backend, links=16, frames=args.frames, max_batch=500)
                ),
            ),
            (
                "one commit per frame, 16 links",
                lambda: Deferred.fromCoroutine(
                    frame_commits(backend, links=16, frames=args.frames // 4, max_batch=1)
                ),
            ),
            (
                "one link",
                lambda: Deferred.fromCoroutine(
                    frame_commits(backend, links=1, frames=args.frames, max_batch=500)
                ),
            ),
        ]
        for label, measure in runs:
            print(f"  {label:<32} {await measure()}")
    finally:
        backend.close()


async def main(reactor: Any, argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cbc", type=int, default=300, help="CBC messages per run")
    parser.add_argument("--single", type=int, default=2000, help="one-result messages per run")
    parser.add_argument("--frames", type=int, default=200, help="frames per link")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args(argv)
    print(machine())
    kinds = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for kind in kinds:
        await bench_backend(kind, args)


if __name__ == "__main__":
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, sys.argv[1:])))
