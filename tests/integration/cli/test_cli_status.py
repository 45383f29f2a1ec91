"""``lisgw status`` against a populated store, on SQLite and PostgreSQL; store errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

from lisgw.cli.status import NOT_RUNNING
from lisgw.store.runner import Store
from lisgw.store.status import NodeStatus, publish_node
from tests.integration.cli.conftest import (
    DEAD_REASON,
    NODE,
    RETRY_REASON,
    Populated,
    lisgw,
)


def test_status_shows_node_connections_queues_and_his(populated: tuple[Populated, Store]) -> None:
    facts, _ = populated
    result = lisgw(facts.url, "status")
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"Gateway   {NODE} (pid 4242, v0.1.0): running since" in out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line[:3] == "xn-"}
    assert lines["xn-1"][1:3] == ["connected", "10.1.2.3:40001"]
    assert lines["xn-1"][-1] == "sysmex-xn@1"
    assert lines["xn-2"][1:3] == ["down", "-"]
    assert lines["xn-2"][-3:] == ["4", "5", "auto"]  # reconnects, errors, driver
    assert "xn-2: last error: Connection was refused by other side" in out
    assert "Outbox    pending 1, in flight 0, dead 1" in out
    assert "Orders    queued for analyzers: 4 (xn-1 3, xn-2 1)" in out
    assert "Review    open 1, assigned 0" in out
    assert f"last delivery error: {RETRY_REASON}" in out
    assert "lisgw outbox list --dead" in out
    assert DEAD_REASON not in out  # status counts dead letters; `outbox list` says why
    table = [line for line in out.splitlines() if line.startswith(("NAME", "xn-"))]
    assert len(table) == 3 and all(len(line) <= 80 for line in table)


def test_status_json_is_exact(populated: tuple[Populated, Store]) -> None:
    facts, _ = populated
    result = lisgw(facts.url, "status", "--format", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["running"] is True
    assert [n["name"] for n in document["nodes"]] == [NODE]
    by_name = {c["name"]: c for c in document["connections"]}
    assert set(by_name) == {"xn-1", "xn-2"}
    assert by_name["xn-2"]["state"] == "down"
    assert by_name["xn-2"]["errors"] == 5
    assert by_name["xn-1"]["last_message_at"] is not None
    assert document["outbox"] == {"pending": 1, "inflight": 0, "dead": 1}
    assert document["order_queue"] == {"xn-1": 3, "xn-2": 1}
    assert document["review"] == {"open": 1, "assigned": 0}
    assert document["store"]["schema"]


def test_status_says_daemon_not_running_with_exit_3(populated: tuple[Populated, Store]) -> None:
    facts, store = populated
    stale = time.time() - 2 * 3600
    store.run_sync(publish_node, NodeStatus(NODE, 4242, "0.1.0", stale - 60, stale))
    result = lisgw(facts.url, "status")
    assert result.exit_code == NOT_RUNNING
    assert "daemon not running: last heartbeat 2 h ago" in result.output
    assert "Connections (last reported: the gateway is not running)" in result.output
    document = json.loads(lisgw(facts.url, "status", "--format", "json").output)
    assert document["running"] is False
    assert document["nodes"][0]["running"] is False


def test_status_after_a_clean_stop(populated: tuple[Populated, Store]) -> None:
    facts, store = populated
    now = time.time()
    store.run_sync(publish_node, NodeStatus(NODE, 4242, "0.1.0", now - 60, now, now))
    result = lisgw(facts.url, "status")
    assert result.exit_code == NOT_RUNNING
    assert "daemon not running: stopped" in result.output


def test_store_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.sqlite"
    result = lisgw(f"sqlite:///{missing}", "status")
    assert result.exit_code == 1
    assert f"store not found: {missing} does not exist" in result.output


def test_store_without_schema(tmp_path: Path) -> None:
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    result = lisgw(f"sqlite:///{empty}", "orders", "list")
    assert result.exit_code == 1
    assert "is not a lisgw store (no schema)" in result.output


def test_config_not_found(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from lisgw.cli import main

    result = CliRunner().invoke(main, ["status", "--config", str(tmp_path / "lisgw.yaml")])
    assert result.exit_code == 1
    assert "configuration not found" in result.output
