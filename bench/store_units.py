"""Store-thread cost of one CBC transfer (issue 6): what bounds ``lisgw run``'s sessions/s.

The gateway runs every unit of work on one store thread (SQLite has one writer), so its
sessions/s is bounded by the store thread's time per session: the transfer's unit of work
(lisgw.services.pipeline.store_transfer: message kept, 40 results routed and saved, review
rows, the ORU^R01 built and queued) plus its commit. This script measures that time,
in-process, with no network, on SQLite (WAL, synchronous=FULL) and PostgreSQL, ``--batch``
transfers (default 16, one per analyzer) per transaction as lisgw.services.batcher runs them:

* ``before``: results and review rows saved the former way (``store_transfer(...,
  legacy=True)``: SQLAlchemy ``INSERT … RETURNING`` with per-row type processing);
* ``after``: the current path (plain executemany, ids read back by message id);
* ``--commit-each`` adds the one-transfer-per-commit shape (before the UnitBatcher).

Two routing paths, each measured: ``review`` (no orders: every result unmatched, all 41
into the review queue and, with send_unsolicited, to the HIS) and ``matched`` (an order
for every sample with all 41 tests, every test code mapped: the common case in a lab).
Rounds alternate between the shapes, so ratios are taken under the same machine load (the
machines are shared). Run: ``.venv/bin/python bench/store_units.py [--sessions N]
[--rounds R] [--batch B] [--store sqlite|pg] [--path review|matched] [--commit-each]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from bench.pipeline import Backend, context, machine, sessions  # noqa: E402
from lisgw.drivers.mapping import MappedCode, TestCodeMap  # noqa: E402
from lisgw.his.types import HisOrder, OrderedTest  # noqa: E402
from lisgw.routing import normalize_sample_id  # noqa: E402
from lisgw.services.pipeline import Decoded, IngestContext, store_transfer  # noqa: E402
from lisgw.store import work  # noqa: E402
from lisgw.store.records import QueueTarget  # noqa: E402

Shape = Callable[[Backend, Sequence[list[Decoded]], IngestContext, float], None]


def _transfers(
    conn: sa.Connection,
    batch: Sequence[list[Decoded]],
    ctx: IngestContext,
    now: float,
    legacy: bool,
) -> None:
    """Several transfers in one transaction, as UnitBatcher's flush runs them."""
    for decoded in batch:
        store_transfer(conn, decoded, ctx, session_id=None, now=now, legacy=legacy)


def batched(
    backend: Backend,
    batch: Sequence[list[Decoded]],
    ctx: IngestContext,
    now: float,
    *,
    legacy: bool,
) -> None:
    backend.store.run_sync(_transfers, batch, ctx, now, legacy)


def one_per_commit(
    backend: Backend, batch: Sequence[list[Decoded]], ctx: IngestContext, now: float
) -> None:
    for decoded in batch:
        backend.store.run_sync(store_transfer, decoded, ctx, session_id=None, now=now)


def matched_context(data: Sequence[list[Decoded]]) -> tuple[IngestContext, list[MappedCode]]:
    """The bench context with every test code of the CBC message mapped (HEM-<code>)."""
    driver = "sysmex-xn"
    codes = sorted(
        {
            result.test
            for decoded in data[:1]
            for item in decoded
            for specimen in item.message.specimens
            for result in specimen.results
        }
    )
    rows = [MappedCode(driver, code, f"HEM-{code}") for code in codes]
    return replace(context(), codes=TestCodeMap(rows, "bench")), rows


def preload_orders(
    backend: Backend, data: Sequence[list[Decoded]], ctx: IngestContext, rows: list[MappedCode]
) -> None:
    """One open order per sample asking for every mapped test (no patient data)."""
    tests = tuple(OrderedTest(row.his_code) for row in rows)
    orders = [
        HisOrder("new", f"PL-{sample}", "", sample, "", "", tests)
        for decoded in data
        for item in decoded
        for sample in {normalize_sample_id(s.sample_id) for s in item.message.specimens}
    ]
    routes = {row.his_code: [QueueTarget(ctx.connection, row.analyzer_code)] for row in rows}
    backend.store.run_sync(work.save_his_orders, orders, routes=routes, now=time.time())


def measure(
    backend: Backend, shape: Shape, data: Sequence[list[Decoded]], ctx: IngestContext, batch: int
) -> tuple[float, float]:
    """(wall ms, CPU ms) per transfer."""
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(data), batch):
        shape(backend, data[start : start + batch], ctx, time.time())
    count = len(data)
    return (
        1000 * (time.perf_counter() - wall) / count,
        1000 * (time.process_time() - cpu) / count,
    )


def bench(kind: str, path: str, args: argparse.Namespace) -> None:
    backend = Backend(kind)
    try:
        print(f"\n{backend.describe()}: CBC transfers (41 results), path {path}, ms per transfer")
        shapes: dict[str, Shape] = {
            "before": partial(batched, legacy=True),
            "after": partial(batched, legacy=False),
        }
        if args.commit_each:
            shapes["before, 1/commit"] = one_per_commit
        figures: dict[str, list[tuple[float, float]]] = {label: [] for label in shapes}
        for round_ in range(args.rounds):
            for index, (label, shape) in enumerate(shapes.items()):
                data = sessions(args.sessions, single_result=False, prefix=f"S{round_}{index}")
                ctx = context()
                if path == "matched":
                    ctx, rows = matched_context(data)
                    preload_orders(backend, data, ctx, rows)
                figures[label].append(measure(backend, shape, data, ctx, args.batch))
        for label, values in figures.items():
            wall = statistics.median(v[0] for v in values)
            cpu = statistics.median(v[1] for v in values)
            print(
                f"  {label:<18} wall {wall:6.2f} ms  CPU {cpu:6.2f} ms  "
                f"-> {1000 / wall:6.0f} transfers/s on one store thread"
            )
        before = [statistics.median(v[i] for v in figures["before"]) for i in (0, 1)]
        after = [statistics.median(v[i] for v in figures["after"]) for i in (0, 1)]
        print(
            f"  after vs before: {before[0] / after[0]:.2f}x faster (wall), "
            f"{before[1] / after[1]:.2f}x less CPU"
        )
    finally:
        backend.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=160)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--store", action="append", choices=["sqlite", "pg"])
    parser.add_argument("--path", action="append", choices=["review", "matched"])
    parser.add_argument("--commit-each", action="store_true")
    args = parser.parse_args(argv)
    print(f"machine: {machine()} | load average {os.getloadavg()[0]:.2f}")
    for kind in args.store or ["sqlite", "pg"]:
        for path in args.path or ["review", "matched"]:
            bench(kind, path, args)


if __name__ == "__main__":
    main()
