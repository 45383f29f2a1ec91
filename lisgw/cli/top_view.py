"""What ``lisgw top`` draws: a live-state snapshot as a rich renderable or a JSON document.

Layer: interface (pure: no store, no I/O, no clock; ``now`` is the snapshot's). Takes the
``LiveStatus`` lisgw.store.live_status reads and lays it out for an 80-column terminal:

* a title line (store, local time, how to quit);
* the gateway processes: up since, last heartbeat, or a red ``DAEMON NOT RUNNING`` banner
  when none has a recent heartbeat (lisgw.store.status.node_is_running);
* one table row per connection: state, peer, age of its last message, reconnects, errors,
  results in the last minute and hour, order downloads queued; then the last error of each
  line that is not connected;
* queue depths: outbox pending (with the oldest one's age), inflight, dead; open review
  items; downloads queued.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from lisgw.store.live_status import ConnectionLine, LiveStatus
from lisgw.store.status import node_is_running

__all__ = ["age", "render", "snapshot_json"]

WIDTH: Final = 80
_STATE_STYLES: Final = {
    "connected": "green",
    "listening": "cyan",
    "connecting": "yellow",
    "waiting": "yellow",
    "down": "bold red",
    "stopped": "dim",
}


def age(seconds: float | None) -> str:
    """A compact age: ``4s``, ``12m``, ``3h05``, ``2d04``; ``-`` for none."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m"
    if seconds < 86400:
        return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}"
    return f"{seconds // 86400:.0f}d{seconds % 86400 // 3600:02.0f}"


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at).strftime("%H:%M:%S")


def render(status: LiveStatus, *, store: str, problem: str = "") -> RenderableType:
    """The whole screen for one snapshot; ``problem`` (the store went away…) on top."""
    title = Text(no_wrap=True, overflow="ellipsis")
    title.append("lisgw top", style="bold")
    title.append(f"  {_clock(status.now)}  ")
    title.append("q: quit", style="dim")
    title.append(f"  {store}")
    parts: list[RenderableType] = [title]
    if problem:
        parts.append(Text(problem, style="bold red", no_wrap=True, overflow="ellipsis"))
    parts.extend(_nodes(status))
    parts.append(_table(status))
    parts.extend(_line_errors(status))
    parts.append(_queues(status))
    return Group(*parts)


def _nodes(status: LiveStatus) -> list[Text]:
    now = status.now
    if not status.nodes:
        return [Text("DAEMON NOT RUNNING: no gateway has run on this store yet", "bold red")]
    running = [node for node in status.nodes if node_is_running(node, now)]
    lines = [
        Text(
            f"gateway {node.name} pid {node.pid} v{node.version}, up {age(now - node.started_at)},"
            f" heartbeat {age(now - node.heartbeat_at)} ago",
            style="green",
            no_wrap=True,
            overflow="ellipsis",
        )
        for node in running
    ]
    if not running:
        last = max(status.nodes, key=lambda node: node.heartbeat_at)
        if last.stopped_at is not None:
            why = f"{last.name} stopped at {_clock(last.stopped_at)}"
        else:
            why = f"{last.name} last heartbeat {age(now - last.heartbeat_at)} ago"
        lines.append(
            Text(f"DAEMON NOT RUNNING: {why}", style="bold red", no_wrap=True, overflow="ellipsis")
        )
    return lines


def _table(status: LiveStatus) -> Table:
    # 14+10+20+5+4+4+4+5+5 = 71 characters of cells and the box's 8 separators: 79 columns.
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=0, show_edge=False)
    table.add_column("Connection", no_wrap=True, overflow="ellipsis", width=14)
    table.add_column("State", no_wrap=True, overflow="ellipsis", width=10)
    table.add_column("Peer", no_wrap=True, overflow="ellipsis", width=20)
    for header, width in (("Last", 5), ("Rcn", 4), ("Err", 4), ("R/1m", 4), ("R/1h", 5)):
        table.add_column(header, justify="right", no_wrap=True, overflow="ellipsis", width=width)
    table.add_column("Ord", justify="right", no_wrap=True, overflow="ellipsis", width=5)
    for line in status.connections:
        table.add_row(*_row(line, status.now))
    if not status.connections:
        table.add_row("(no connections yet)", "", "", "", "", "", "", "", "")
    return table


def _row(line: ConnectionLine, now: float) -> tuple[str | Text, ...]:
    report = line.status
    state = Text(str(report.state) if report else "-", style=_state_style(line))
    last = report.last_message_at if report else None
    return (
        line.name,
        state,
        report.peer if report and report.peer else "-",
        age(None if last is None else now - last),
        str(report.reconnects) if report else "-",
        str(report.errors) if report else "-",
        str(line.results_last_minute),
        str(line.results_last_hour),
        str(line.downloads_queued),
    )


def _state_style(line: ConnectionLine) -> str:
    return _STATE_STYLES.get(str(line.status.state), "") if line.status else "dim"


def _line_errors(status: LiveStatus) -> list[Text]:
    return [
        Text(
            f"{line.name}: {line.status.last_error}",
            style="red",
            no_wrap=True,
            overflow="ellipsis",
        )
        for line in status.connections
        if line.status and line.status.last_error and str(line.status.state) != "connected"
    ]


def _queues(status: LiveStatus) -> Text:
    queues = status.queues
    oldest = queues.oldest_pending_at
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append("Outbox ", style="bold")
    text.append(f"pending {queues.outbox.get('pending', 0)}")
    if oldest is not None:
        text.append(f" (oldest {age(status.now - oldest)})")
    text.append(f"  inflight {queues.outbox.get('inflight', 0)}")
    dead = queues.outbox.get("dead", 0)
    text.append(f"  dead {dead}", style="bold red" if dead else "")
    text.append("  Review ", style="bold")
    text.append(f"{queues.review_open}")
    text.append("  Orders ", style="bold")
    text.append(f"{queues.downloads_queued}")
    return text


def snapshot_json(status: LiveStatus, *, store: str) -> dict[str, Any]:
    """The snapshot for scripts: exact epoch seconds, no styling."""
    now = status.now
    return {
        "at": now,
        "store": store,
        "running": any(node_is_running(node, now) for node in status.nodes),
        "nodes": [
            {
                "name": node.name,
                "pid": node.pid,
                "version": node.version,
                "started_at": node.started_at,
                "heartbeat_at": node.heartbeat_at,
                "stopped_at": node.stopped_at,
                "running": node_is_running(node, now),
            }
            for node in status.nodes
        ],
        "connections": [_connection_json(line) for line in status.connections],
        "queues": {
            "outbox": dict(status.queues.outbox),
            "oldest_pending_at": status.queues.oldest_pending_at,
            "review_open": status.queues.review_open,
            "downloads_queued": status.queues.downloads_queued,
        },
    }


def _connection_json(line: ConnectionLine) -> dict[str, Any]:
    report = line.status
    return {
        "name": line.name,
        "state": str(report.state) if report else None,
        "node": report.node if report else None,
        "peer": report.peer if report else None,
        "since": report.since if report else None,
        "last_message_at": report.last_message_at if report else None,
        "reconnects": report.reconnects if report else None,
        "errors": report.errors if report else None,
        "last_error": report.last_error if report else None,
        "results_last_minute": line.results_last_minute,
        "results_last_hour": line.results_last_hour,
        "downloads_queued": line.downloads_queued,
    }
