"""Load benchmark (issue 6): ``lisgw run`` under many simulated analyzers, end to end.

The gateway runs as a separate process (``python -m lisgw run --config FILE``, a
configuration generated in a temporary directory) on SQLite (its default file, WAL,
synchronous=FULL) or PostgreSQL (a fresh database on ``--pg-url``, dropped afterwards). This
process plays the HIS (an MLLP server ACKing every ORU^R01) and the analyzers (asyncio
clients speaking real E1381: ENQ, checksummed frames each waiting for its ACK, EOT), sending
CBC-sized sessions (40 R records in 11 frames, shaped like the corpus Sysmex XN-550 capture,
de-identified, synthetic sample IDs): see bench/load_parts.py.

All analyzers are tcp-server connections on ONE listener port, told apart by peer address
(``peers: [127.0.1.N]``; each client binds its own loopback source address), as a lab's
analyzers on one port are told apart by their IP.

Scenarios (issue 6 targets):

* ``connections``: 200 analyzer connections opened and held (``--hold`` s), then every one
  sends a session; all must be ACKed and reach the HIS (target: 200 held).
* ``throughput``: 16 analyzers sending back to back: sessions/s and frames/s ACKed, frame ACK
  latency, sessions/s delivered to the HIS (target: >= 400 sessions/s, every frame durable
  before its ACK).
* ``latency``: 50 analyzers x 1 session/s: p50/p99 from the analyzer's EOT to the HIS having
  ACKed that session's ORU (target: p99 <= 100 ms).
* ``query``: 1,000,000 orders bulk-inserted with SQL before the start (one test each, queued
  for the query analyzers), then analyzers send host queries (H, Q, L): p50/p99 from the
  query's EOT to the host's ENQ and to the reply's EOT (target: p99 <= 50 ms). Needs the
  host-query responder (lisgw/services/responder.py).

Every scenario prints the gateway process's CPU time (user+sys, /proc) and peak RSS. Run:
``.venv/bin/python bench/load.py SCENARIO [--store sqlite|pg|URL] [options]``, or
``all`` for every scenario on both stores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench.load_orders import (  # noqa: E402
    cbc_codes,
    preload_cbc_orders,
    preload_orders,
    write_cbc_codes,
)
from bench.load_parts import GatewayProcess, HisServer, LinkFailure, sample_id  # noqa: E402
from bench.load_scenarios import (  # noqa: E402
    SCENARIO_FUNCTIONS,
    Run,
    analyzer_name,
    cbc_template,
    peer,
)
from lisgw.store.database import make_engine  # noqa: E402

PG_URL = os.environ.get("LISGW_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SCENARIOS = ("connections", "throughput", "latency", "query")


def machine() -> str:
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    return (
        f"{platform.node()} | {cpu} | {os.cpu_count()} cores | Python "
        f"{platform.python_version()} | SQLite {sqlite3.sqlite_version} | "
        f"{platform.system()} {platform.release()} | load average {os.getloadavg()[0]:.2f}"
    )


# -- the store and the configuration -------------------------------------------------------------


class Backend:
    """Where the gateway keeps its store: its default SQLite file, or a fresh PG database."""

    def __init__(self, store: str, workdir: Path) -> None:
        self.kind = "sqlite" if store == "sqlite" else "postgresql"
        self.admin: Any = None
        self.database = ""
        if self.kind == "sqlite":
            (workdir / "data").mkdir(mode=0o700)
            self.url = f"sqlite:///{workdir / 'data' / 'lisgw.sqlite'}"
            return
        base = PG_URL if store == "pg" else store
        self.admin = make_engine(base, isolation_level="AUTOCOMMIT")
        self.database = f"lisgw_load_{uuid.uuid4().hex[:12]}"
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{self.database}"')
        self.url = make_url(base).set(database=self.database).render_as_string(False)

    def label(self) -> str:
        return "SQLite (WAL, synchronous=FULL)" if self.kind == "sqlite" else "PostgreSQL"

    def config_url(self) -> str | None:
        return None if self.kind == "sqlite" else self.url

    def drop(self) -> None:
        if self.admin is not None:
            with self.admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            self.admin.dispose()


def write_config(
    workdir: Path,
    backend: Backend,
    *,
    analyzers: int,
    port: int,
    his_port: int,
    orders: str,
    test_codes: Path | None = None,
) -> Path:
    data: dict[str, Any] = {
        "data_dir": str(workdir / "data"),
        "time_zone": "Europe/Paris",
        "test_codes": str(test_codes or ROOT / "config" / "test-codes.example.yaml"),
        "routing": {"send_unsolicited": True},
        "his": {
            "profile": "hl7-v251",
            "results": {"host": "127.0.0.1", "port": his_port, "ack_timeout": "10s"},
        },
        "connections": [
            {
                "name": analyzer_name(i),
                "protocol": "astm",
                "driver": "sysmex-xn",
                "transport": "tcp-server",
                "host": "127.0.0.1",
                "port": port,
                "peers": [peer(i)],
                "orders": orders,
            }
            for i in range(analyzers)
        ],
    }
    url = backend.config_url()
    if url is not None:
        data["store"] = {"url": url}
    path = workdir / "lisgw.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- one run ---------------------------------------------------------------------------------------


async def run_scenario(name: str, store: str, args: argparse.Namespace) -> None:
    analyzers = {"connections": args.connections, "query": args.query_analyzers}.get(
        name, args.analyzers if args.analyzers else (16 if name == "throughput" else 50)
    )
    workdir = Path(tempfile.mkdtemp(prefix="lisgw-load-"))
    backend = Backend(store, workdir)
    his = HisServer()
    gateway: GatewayProcess | None = None
    try:
        his_port = await his.start()
        port = free_port()
        orders = "query" if name == "query" else "none"
        template = cbc_template()
        matched = args.matched_orders > 0 and name in ("throughput", "latency")
        codes = write_cbc_codes(workdir / "codes.yaml", cbc_codes(template)) if matched else None
        config = write_config(
            workdir,
            backend,
            analyzers=analyzers,
            port=port,
            his_port=his_port,
            orders=orders,
            test_codes=codes,
        )
        path = "matched (orders for every sample)" if matched else "no orders: all to review"
        print(f"\n== {name} on {backend.label()}: {analyzers} analyzer(s), {path}", flush=True)
        tag = "".join(random.choice("ABCDEFGHJKMNPQRSTUVWXYZ") for _ in range(2))
        if name == "query":
            took = preload_orders(backend.url, args.orders, analyzers, analyzer_name)
            print(f"  orders stored: {args.orders} (bulk insert {took:.1f} s)", flush=True)
        if matched:
            samples = [sample_id(tag, n) for n in range(1, args.matched_orders + 1)]
            took = preload_cbc_orders(backend.url, samples, cbc_codes(template))
            print(f"  orders stored: {len(samples)} x 40 tests ({took:.1f} s)", flush=True)
        gateway = GatewayProcess(config, workdir)
        await gateway.start()
        run = Run(args, backend, his, gateway, port, tag, template)
        profiler = await start_profiler(args.profile, gateway.pid, args.warmup + args.seconds)
        before = gateway.usage()
        own_before = time.process_time()
        started = time.perf_counter()
        await SCENARIO_FUNCTIONS[name](run, analyzers)
        elapsed = time.perf_counter() - started
        own = time.process_time() - own_before
        after = gateway.usage()
        cpu = after.cpu_seconds - before.cpu_seconds
        kernel = after.sys_seconds - before.sys_seconds
        print(
            f"  gateway: CPU {cpu:.1f} s user+sys ({kernel:.1f} s sys) over {elapsed:.1f} s "
            f"({100 * cpu / elapsed:.0f} % of one core), peak RSS {after.peak_rss_mb:.0f} MB"
            + (
                f", {1000 * cpu / his.messages:.1f} ms CPU per ORU delivered"
                if his.messages
                else ""
            )
        )
        print(
            f"  load generator (this process: simulated analyzers and HIS): CPU {own:.1f} s "
            f"({100 * own / elapsed:.0f} % of one core)"
            + (f", {1000 * own / his.messages:.1f} ms per ORU" if his.messages else "")
        )
        if profiler is not None:
            await profiler.wait()
            print(f"  profile (py-spy, collapsed stacks): {args.profile}")
        errors = gateway.log_errors()
        if errors:
            print(f"  gateway log: {len(errors)} critical/traceback line(s), first: {errors[0]}")
    finally:
        if gateway is not None:
            await gateway.stop()
        await his.stop()
        backend.drop()
        if args.keep:
            print(f"  kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


async def start_profiler(
    path: str | None, pid: int, seconds: float
) -> asyncio.subprocess.Process | None:
    """py-spy recording the gateway (``--profile``; py-spy installed by hand, not a
    dependency), collapsed stacks written to ``path``."""
    if not path:
        return None
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return await asyncio.create_subprocess_exec(
        spy,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(int(seconds)),
        "--rate",
        "200",
        "--format",
        "raw",
        "--output",
        path,
        "--nonblocking",
        *(["--idle"] if os.environ.get("LISGW_BENCH_PROFILE_IDLE") else []),
        *(["--gil"] if os.environ.get("LISGW_BENCH_PROFILE_GIL") else []),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


# -- the scenarios ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=[*SCENARIOS, "all"])
    parser.add_argument(
        "--store", action="append", help="sqlite (default), pg, or a URL; repeatable"
    )
    parser.add_argument("--analyzers", type=int, default=0, help="throughput/latency (16/50)")
    parser.add_argument("--connections", type=int, default=200, help="connections scenario")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds to hold connections")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds not measured")
    parser.add_argument("--drain", type=float, default=120.0, help="max wait for the HIS")
    parser.add_argument("--rate", type=float, default=1.0, help="latency: sessions/s each")
    parser.add_argument("--orders", type=int, default=1_000_000, help="query: orders stored")
    parser.add_argument(
        "--matched-orders",
        type=int,
        default=0,
        help="throughput/latency: store an order (every CBC test) for the first N sample IDs "
        "sent, with a test-code map knowing every code: the matched path (0: no orders)",
    )
    parser.add_argument("--query-analyzers", type=int, default=16)
    parser.add_argument("--query-rate", type=float, default=2.0, help="queries/s each")
    parser.add_argument("--profile", help="record the gateway with py-spy to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    return parser.parse_args(argv)


async def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    print(f"machine: {machine()}", flush=True)
    scenarios = SCENARIOS if args.scenario == "all" else (args.scenario,)
    stores = args.store or (["sqlite", "pg"] if args.scenario == "all" else ["sqlite"])
    for store in stores:
        for scenario in scenarios:
            try:
                await run_scenario(scenario, store, args)
            except (LinkFailure, RuntimeError, OSError) as error:
                print(f"  {scenario} on {store} FAILED: {error}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
