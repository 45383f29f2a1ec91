"""``lisgw tail`` and ``lisgw top`` against a populated store, on SQLite and PostgreSQL.

The store is written through the real units of work (traffic_data.py: invented records
and names, no patient data); the commands read it through ``--store`` as they would read
the running gateway's.
"""

from __future__ import annotations

import json
import time

from click.testing import CliRunner, Result

from lisgw.cli import main
from lisgw.store import work
from lisgw.store.records import ConnectionState
from lisgw.store.runner import Store
from tests.integration.live import traffic_data as td
from tests.integration.store.factories import ROUTES, his_order


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def populate(store: Store, now: float) -> int:
    """Traffic of the last minutes: an ASTM transfer, a HIS order and its ACK, an ORU
    delivered; the gateway's node and line. The delivered outbox row's id."""
    store.run_sync(td.add_astm_transfer, now - 300)
    store.run_sync(td.add_his_order, now - 200)
    row = store.run_sync(td.add_outbox_row, "S0001", now - 100)
    store.run_sync(lambda conn: work.outbox_delivered(conn, row.id, now=now - 90, worker="w"))
    store.run_sync(td.publish, now)
    return row.id


def text_lines(result: Result) -> list[str]:
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def test_tail_once_decodes_records_segments_and_deliveries(
    live_store: Store, store_url: str
) -> None:
    populate(live_store, time.time())
    lines = text_lines(run("tail", "--store", store_url, "--once", "--since", "1h"))
    records = [line for line in lines if " c311 " in line and " in " in line]
    assert [line.split(maxsplit=3)[3][:2] for line in records[:5]] == ["H|", "P|", "O|", "R|", "L|"]
    assert any("R|1|^^^GLU|5.4|mmol/L" in line for line in records)
    assert any("== message 1 astm results: routed" in line for line in lines)
    his_in = [line for line in lines if " his-orders " in line and " in " in line]
    assert any("ORM^O01" in line for line in his_in)
    assert any("his-orders   out MSA|AA|MSG1" in line for line in lines)
    delivered = [line for line in lines if " HIS " in line]
    assert "ORU^R01 delivered sample S0001 from c311" in delivered[0]
    assert any(line.endswith("OBX|1|NM|GLU^Glucose||5.4|mmol/L|||||F") for line in delivered)
    times = [line.split()[0] for line in lines if not line.startswith("---")]
    assert times == sorted(times)


def test_tail_masks_patient_names_unless_asked(live_store: Store, store_url: str) -> None:
    populate(live_store, time.time())
    for extra in ((), ("--raw",), ("--format", "json")):
        out = run("tail", "--store", store_url, "--once", "--since", "1h", *extra).stdout
        assert "DOE" not in out and "JANE" not in out, extra
    masked = run("tail", "--store", store_url, "--once", "--since", "1h").stdout
    assert "P|1||PID0001||D***^J***||19800101|F" in masked
    assert "PID|1||PID0001||D***^J***||19800101|F" in masked
    shown = run("tail", "--store", store_url, "--once", "--since", "1h", "--show-patient").stdout
    assert "P|1||PID0001||DOE^JANE||19800101|F" in shown
    assert "PID|1||PID0001||DOE^JANE" in shown


def test_tail_raw_shows_frames_byte_for_byte(live_store: Store, store_url: str) -> None:
    populate(live_store, time.time())
    lines = text_lines(run("tail", "--store", store_url, "--once", "--since", "1h", "--raw"))
    frames = [line.split(maxsplit=3)[3] for line in lines if " c311 " in line and "<STX>" in line]
    assert frames[0].startswith("<STX>1H|\\^&|||c311")
    assert all(f.endswith(("<ETB>", "<ETX>"), 0, len(f) - 2) for f in frames)
    assert "<CR><ETX>" in frames[-1]
    assert any("***^****" in frame for frame in frames)


def test_tail_json_lines_and_connection_filter(live_store: Store, store_url: str) -> None:
    populate(live_store, time.time())
    result = run(
        "tail",
        "--store",
        store_url,
        "--once",
        "--since",
        "1h",
        "-c",
        "his-orders",
        "--format",
        "json",
    )
    documents = [json.loads(line) for line in text_lines(result)]
    assert {d["connection"] for d in documents} == {"his-orders"}
    keys = {"at", "time", "connection", "direction", "protocol", "source", "id", "kind", "text"}
    assert all(keys <= set(d) for d in documents)
    segments = [d for d in documents if d["kind"] == "segment"]
    assert [d["type"] for d in segments] == ["MSH", "PID", "ORC", "OBR", "MSH", "MSA"]
    assert [d["direction"] for d in segments][-2:] == ["out", "out"]
    summary = next(d for d in documents if d["kind"] == "message")
    assert (summary["message_kind"], summary["state"]) == ("orders", "processed")


def test_tail_last_n_and_since_start_where_asked(live_store: Store, store_url: str) -> None:
    now = time.time()
    live_store.run_sync(td.add_astm_transfer, now - 7200, sample_id="OLD1", max_text=240)
    live_store.run_sync(td.add_astm_transfer, now - 60, sample_id="NEW1", max_text=240)
    recent = run("tail", "--store", store_url, "--once", "--since", "30m").stdout
    assert "NEW1" in recent and "OLD1" not in recent
    everything = run("tail", "--store", store_url, "--once", "--since", "1d").stdout
    assert everything.index("OLD1") < everything.index("NEW1")
    last = run("tail", "--store", store_url, "--once", "--last", "1", "--format", "json").stdout
    sources = {(d["source"], d["kind"]) for d in map(json.loads, last.splitlines())}
    assert sources == {("frame", "record"), ("message", "message")}
    assert "NEW1" in last and "OLD1" not in last


def test_tail_errors_name_the_problem(live_store: Store, store_url: str, tmp_path: object) -> None:
    populate(live_store, time.time())
    result = run("tail", "--store", store_url, "--once", "-c", "nope")
    assert result.exit_code == 1
    assert "unknown connection 'nope' (known: c311, his-orders" in result.output
    result = run("tail", "--store", f"sqlite:///{tmp_path}/missing.sqlite", "--once")
    assert result.exit_code == 1 and "store not found" in result.output
    result = run("tail", "--store", store_url, "--once", "--since", "yesterday")
    assert result.exit_code == 2 and "--since" in result.output


def test_top_once_shows_lines_queues_and_a_running_gateway(
    live_store: Store, store_url: str
) -> None:
    now = time.time()
    populate(live_store, now)
    live_store.run_sync(td.add_outbox_row, "S0002", now - 30)
    live_store.run_sync(
        work.save_his_orders, [his_order("ORD9", "S0009", "HEM-WBC")], routes=ROUTES, now=now
    )
    lines = text_lines(run("top", "--store", store_url, "--once"))
    assert max(len(line) for line in lines) <= 80
    assert any(line.startswith("gateway gw1 pid 4242") for line in lines)
    assert not any("NOT RUNNING" in line for line in lines)
    c311 = next(line for line in lines if line.startswith("c311 "))
    assert c311.split()[:3] == ["c311", "connected", "10.0.0.9:4001"]
    xn1 = next(line for line in lines if line.startswith("xn-1 "))
    assert xn1.split()[-1] == "1"  # one order download queued for xn-1
    assert any("Outbox pending 1" in line and "dead 0" in line for line in lines)


def test_top_json_snapshot_counts(live_store: Store, store_url: str) -> None:
    now = time.time()
    populate(live_store, now)
    live_store.run_sync(td.add_outbox_row, "S0002", now - 30)
    snapshot = json.loads(
        text_lines(run("top", "--store", store_url, "--once", "--format", "json"))[0]
    )
    assert snapshot["running"] is True
    assert snapshot["queues"]["outbox"] == {"pending": 1, "inflight": 0, "dead": 0}
    c311 = next(c for c in snapshot["connections"] if c["name"] == "c311")
    assert (c311["state"], c311["reconnects"], c311["peer"]) == ("connected", 2, "10.0.0.9:4001")
    names = [c["name"] for c in snapshot["connections"]]
    assert names == sorted(names) and "his-orders" in names


def test_top_says_the_daemon_is_not_running(live_store: Store, store_url: str) -> None:
    now = time.time()
    live_store.run_sync(
        td.publish,
        now,
        state=ConnectionState.DOWN,
        heartbeat_at=now - 600,
        errors=3,
        last_error="connection refused",
    )
    lines = text_lines(run("top", "--store", store_url, "--once", "-c", "c311"))
    assert any("DAEMON NOT RUNNING: gw1 last heartbeat 10m ago" in line for line in lines)
    assert any(line.startswith("c311: connection refused") for line in lines)
    assert next(line for line in lines if line.startswith("c311 ")).split()[1] == "down"
    stopped = run("top", "--store", store_url, "--once", "--format", "json").stdout
    assert json.loads(stopped)["running"] is False


def test_top_on_an_empty_store_and_unknown_connection(live_store: Store, store_url: str) -> None:
    lines = text_lines(run("top", "--store", store_url, "--once"))
    assert any("DAEMON NOT RUNNING: no gateway has run on this store yet" in line for line in lines)
    result = run("top", "--store", store_url, "--once", "-c", "c311")
    assert result.exit_code == 1 and "unknown connection 'c311' (known: none yet)" in result.output


def test_help_has_examples() -> None:
    for command in ("tail", "top"):
        result = run(command, "--help")
        assert result.exit_code == 0 and "Examples:" in result.output
        assert "--store URL" in result.output and "--format [text|json]" in result.output
