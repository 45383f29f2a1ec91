"""bench/load.py runs: miniature scenarios (2 analyzers, a few sessions) print their figures.

The benchmark starts ``lisgw run`` as a subprocess and plays the HIS and the analyzers
(bench/load_parts.py); these tests run it as a script, as a person would, and check the
shape of its output and its counts (every session ACKed and delivered), never its timings.
The sessions are built from the corpus Sysmex XN-550 CBC capture
(astm/sysmex_xn550/sysmex_xn550_cbc_results.bin), de-identified by bench/load_parts.py.
"""

from __future__ import annotations

import re
import subprocess
import sys

from bench.load_parts import cbc_template, sample_id, session_frames
from tests.system.conftest import CORPUS, PG_URL, REPO

FIGURE = r"\d+(\.\d+)? ms"


def run_load(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "load.py"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "FAILED" not in output and "Traceback" not in output, output
    assert "analyzer failures" not in output, output
    assert re.search(r"gateway: CPU \d+\.\d s user\+sys .* peak RSS \d+ MB", output), output
    return output


def test_sessions_are_cbc_sized_and_de_identified() -> None:
    assert CORPUS.is_dir(), f"the shared corpus is missing at {CORPUS}"
    frames = session_frames(cbc_template(), sample_id("TT", 7), "PT7")
    text = b"".join(frame[2:-5] for frame in frames)  # STX n … ETB/ETX cc CR LF
    records = [r for r in text.split(b"\r") if r]
    assert len(frames) == 11
    assert [r[:1] for r in records].count(b"R") == 40
    assert b"Jim" not in text and b"Brown" not in text and b"19800101" not in text
    assert b"LDTT00000007^M" in text


def test_connections_and_throughput_on_sqlite() -> None:
    output = run_load("connections", "--store", "sqlite", "--connections", "2", "--hold", "0.5")
    for line in (
        "connections held: 2/2",
        "sessions ACKed: 2/2",
        "sessions delivered to the HIS: 2/2",
        "connections open at the end: 2/2",
    ):
        assert line in output, output
    assert re.search(f"EOT -> HIS ACK: p50 {FIGURE}, p99 {FIGURE}", output), output

    output = run_load(
        "throughput", "--store", "sqlite", "--analyzers", "2", "--seconds", "2", "--warmup", "0.5"
    )
    assert re.search(r"sessions ACKed: \d+\.\d sessions/s, \d+ frames/s", output), output
    assert re.search(r"backlog at the end: \d+ session\(s\), drained in", output), output
    assert "NAKs 0" in output, output


def test_latency_and_query_on_sqlite() -> None:
    output = run_load(
        "latency", "--store", "sqlite", "--analyzers", "2", "--seconds", "2", "--warmup", "0.5"
    )
    measured = re.search(r"sessions measured: (\d+) .*delivered (\d+)", output)
    assert measured is not None, output
    assert int(measured.group(1)) >= 2 and measured.group(1) == measured.group(2), output

    output = run_load(
        "query", "--store", "sqlite", "--orders", "2000", "--query-analyzers", "2",
        "--seconds", "2", "--warmup", "0.5",
    )  # fmt: skip
    assert "orders stored: 2000" in output, output
    replies = re.search(r"queries measured: (\d+) .*with orders (\d+), without (\d+)", output)
    assert replies is not None, output
    total, with_orders, without = (int(g) for g in replies.groups())
    assert total >= 2 and with_orders + without == total, output
    assert re.search(f"query EOT -> reply EOT: p50 {FIGURE}, p99 {FIGURE}", output), output


def test_connections_on_postgresql() -> None:
    # The benchmark makes a fresh database on this server and drops it afterwards.
    output = run_load("connections", "--store", PG_URL, "--connections", "2", "--hold", "0.5")
    assert "on PostgreSQL" in output and "sessions delivered to the HIS: 2/2" in output, output
