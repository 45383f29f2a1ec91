"""``lisgw tail`` and ``lisgw top`` in a real terminal: a pseudo-terminal (pty.fork, 80x40),
the command running in it against a store that the test writes to meanwhile.

Every wait is bounded (WAIT seconds) and fails with what the terminal showed so far.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time
from collections.abc import Callable, Iterator
from typing import Final

import pytest

from lisgw.store.records import ConnectionState
from lisgw.store.runner import Store
from tests.integration.live import traffic_data as td

WAIT: Final = 30.0


class Terminal:
    """A command in a pty: what it wrote, keys to send, its exit status."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "80", "LINES": "40"}
        env.pop("NO_COLOR", None)
        pid, fd = pty.fork()
        if pid == 0:  # the child: the pty is its controlling terminal
            os.execve(sys.executable, [sys.executable, "-m", "lisgw", *args], env)
        self.pid, self.fd = pid, fd
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 80, 0, 0))
        self.output = ""
        self.status: int | None = None

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            with contextlib.suppress(OSError):  # EIO: the child closed the terminal
                self.output += os.read(self.fd, 65536).decode("utf-8", "replace")

    def wait_for(self, what: Callable[[str], bool], why: str) -> None:
        deadline = time.monotonic() + WAIT
        while not what(self.output):
            if time.monotonic() > deadline:
                pytest.fail(f"no {why} within {WAIT}s; the terminal showed:\n{self.output!r}")
            self._read(0.2)

    def send(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def wait_exit(self) -> int:
        deadline = time.monotonic() + WAIT
        while self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
            elif time.monotonic() > deadline:
                pytest.fail(f"the command did not exit within {WAIT}s:\n{self.output!r}")
            else:
                self._read(0.1)
        return self.status

    def close(self) -> None:
        if self.status is None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


@pytest.fixture
def terminals() -> Iterator[Callable[..., Terminal]]:
    started: list[Terminal] = []

    def start(*args: str) -> Terminal:
        started.append(Terminal(*args))
        return started[-1]

    yield start
    for terminal in started:
        terminal.close()


def test_tail_follows_new_traffic_until_ctrl_c(
    live_store: Store, store_url: str, terminals: Callable[..., Terminal]
) -> None:
    now = time.time()
    live_store.run_sync(td.publish, now)
    live_store.run_sync(td.add_astm_transfer, now - 60, sample_id="BEFORE", max_text=240)
    tail = terminals("tail", "--store", store_url, "--interval", "0.1", "--last", "1")
    tail.wait_for(lambda out: "message 1 astm results: routed" in out, "backlog line")
    live_store.run_sync(td.add_astm_transfer, time.time(), sample_id="LIVE7")
    tail.wait_for(lambda out: "O|1|LIVE7||^^^GLU|R" in out, "new record")
    tail.wait_for(lambda out: "message 2 astm results: routed" in out, "new message")
    live_store.run_sync(td.add_his_order, time.time())
    tail.wait_for(lambda out: "his-orders   out MSA|AA|MSG1" in out, "HIS order ACK")
    assert "P|1||PID0001||D***^J***||19800101|F" in tail.output
    assert "JANE" not in tail.output
    tail.send(b"\x03")  # Ctrl-C through the terminal: SIGINT to the command
    assert tail.wait_exit() == 0


def test_top_redraws_in_place_and_quits_on_q(
    live_store: Store, store_url: str, terminals: Callable[..., Terminal]
) -> None:
    live_store.run_sync(td.publish, time.time())
    top = terminals("top", "--store", store_url, "--interval", "0.2")
    top.wait_for(lambda out: "connected" in out and "gateway gw1" in out, "first frame")
    live_store.run_sync(
        td.publish, time.time(), state=ConnectionState.DOWN, errors=4, last_error="refused"
    )
    top.wait_for(lambda out: "c311: refused" in out, "the line going down")
    # rich.live redraws a frame in place: CR, then erase-line + cursor-up once per line of
    # the frame before, then the new frame over it; never a scrolling copy below.
    parts = re.split(r"\r((?:\x1b\[2K\x1b\[1A)+)\x1b\[2K", top.output)
    frames, moves = parts[0::2], parts[1::2]
    assert moves, "no redraw in place"
    for frame, move in zip(frames, moves, strict=False):
        assert move.count("\x1b[1A") == frame.count("\n")
        assert frame.count("lisgw top") == 1
    assert "connected" in frames[0] and "c311: refused" not in frames[0]
    assert any("c311: refused" in frame and "down" in frame for frame in frames[1:])
    top.send(b"q")
    assert top.wait_exit() == 0
