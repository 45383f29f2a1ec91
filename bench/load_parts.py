"""Parts of bench/load.py: CBC sessions, E1381 analyzer clients, a HIS, the gateway process.

Layer: benchmark (asyncio, outside the lisgw package; imports only lisgw's sans-IO frame
builder and the corpus reader). Everything on the load side is plain asyncio, as light as the
wire allows, so that the load process takes as little of the machine's CPU as it can while
the gateway (``lisgw run``, a separate process) is measured.

* ``cbc_template`` / ``session_frames``: a CBC session shaped like the Sysmex XN-550 capture
  of ../shared/corpus (astm/sysmex_xn550/sysmex_xn550_cbc_results.bin: its H, O, 40 R and L
  records), de-identified (no patient name, birth date or ward: a synthetic patient number)
  and with a synthetic sample ID, re-framed into E1381 frames of 240 text bytes (11 frames).
* ``AnalyzerClient``: one instrument on one TCP connection, real E1381 sender: ENQ, wait for
  ACK, each frame (checksummed) and wait for its ACK (NAK: retransmit, up to 6 times), EOT.
  It also receives a host's reply (ENQ, frames ACKed, EOT) after a host query.
* ``HisServer``: an MLLP server that ACKs (AA) every ORU^R01 and notes when, by sample ID.
* ``GatewayProcess``: ``python -m lisgw run --config FILE`` with ``$NOTIFY_SOCKET`` pointing at
  a datagram socket here, so READY=1 is awaited as systemd would; its CPU time (user+sys) and
  peak RSS (VmHWM) read from /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
CAPTURE = CORPUS / "astm" / "sysmex_xn550" / "sysmex_xn550_cbc_results.bin"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lisgw.astm.frames import build_frames  # noqa: E402
from lisgw.sim.analyzer import capture_messages, host_query_records  # noqa: E402

ENQ, ACK, NAK, EOT, STX = b"\x05", b"\x06", b"\x15", b"\x04", b"\x02"
VT, FS_CR = b"\x0b", b"\x1c\r"
RESULTS_PER_SESSION = 40
SAMPLE_PATTERN = re.compile(rb"LD[0-9A-Z]{2}\d{8}")


def sample_id(run_tag: str, number: int) -> str:
    """A synthetic sample ID the HIS finds in the ORU again (``SAMPLE_PATTERN``)."""
    return f"LD{run_tag}{number:08d}"


def cbc_template() -> list[bytes]:
    """The corpus CBC message's records: H, a synthetic P, O (sample ID to fill), 40 R, L."""
    records = list(capture_messages(CAPTURE.read_bytes())[0])
    kept: list[bytes] = []
    results = 0
    for record in records:
        kind = record[:1]
        if kind == b"P":
            kept.append(b"P|1|||{patient}|||||U")  # de-identified: no name, birth date, ward
        elif kind == b"R":
            results += 1
            if results <= RESULTS_PER_SESSION:
                kept.append(record)
        elif kind in b"HOL":
            kept.append(record)
    return kept


def session_frames(template: Sequence[bytes], sample: str, patient: str) -> list[bytes]:
    """The template with this sample ID (O.4.3, right-aligned as the XN sends it)."""
    records = []
    for record in template:
        if record[:1] == b"O":
            fields = record.split(b"|")
            fields[3] = b"^^" + sample.rjust(22).encode("ascii") + b"^M"
            record = b"|".join(fields)
        elif record[:1] == b"P":
            record = record.replace(b"{patient}", patient.encode("ascii"))
        records.append(record)
    return build_frames(b"".join(r + b"\r" for r in records))


def query_frames(sender: str, samples: Sequence[str]) -> list[bytes]:
    """An E1394 host query (H, Q per sample, L), framed."""
    return build_frames(b"".join(r + b"\r" for r in host_query_records(sender, samples)))


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


# -- the analyzer ------------------------------------------------------------------------------


class LinkFailure(Exception):
    """The host broke E1381 (or closed the line) while an analyzer was sending."""


@dataclass
class ClientStats:
    sessions: int = 0
    frames: int = 0
    naks: int = 0
    ack_latencies: list[float] = field(default_factory=list)


class AnalyzerClient:
    """One analyzer's TCP connection to the gateway (module docstring)."""

    def __init__(self, name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.name = name
        self.reader = reader
        self.writer = writer
        self.stats = ClientStats()

    @classmethod
    async def connect(cls, name: str, port: int, source: str) -> AnalyzerClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        return cls(name, reader, writer)

    async def _byte(self, timeout: float = 30.0) -> bytes:
        try:
            data = await asyncio.wait_for(self.reader.readexactly(1), timeout)
        except (asyncio.IncompleteReadError, ConnectionError) as error:
            raise LinkFailure(f"{self.name}: the gateway closed the line") from error
        except TimeoutError as error:
            raise LinkFailure(f"{self.name}: no answer within {timeout} s") from error
        return data

    async def establish(self) -> None:
        """ENQ until the host ACKs (E1381 §6.2: NAK = busy, retry after 10 s; we retry
        sooner, a bench; ENQ = contention, the instrument waits 1 s)."""
        for _ in range(50):
            self.writer.write(ENQ)
            answer = await self._byte()
            if answer == ACK:
                return
            await asyncio.sleep(1.0 if answer == ENQ else 0.2)
        raise LinkFailure(f"{self.name}: the host never accepted ENQ")

    async def send(self, frames: Sequence[bytes]) -> float:
        """One session: ENQ, every frame ACKed, EOT; returns the perf_counter at EOT."""
        await self.establish()
        stats = self.stats
        for frame in frames:
            for _attempt in range(7):
                started = time.perf_counter()
                self.writer.write(frame)
                answer = await self._byte()
                if answer == ACK:
                    stats.ack_latencies.append(time.perf_counter() - started)
                    break
                if answer != NAK:
                    raise LinkFailure(f"{self.name}: {answer!r} instead of ACK/NAK")
                stats.naks += 1
            else:
                raise LinkFailure(f"{self.name}: frame NAKed 7 times")
            stats.frames += 1
        self.writer.write(EOT)
        at = time.perf_counter()
        stats.sessions += 1
        return at

    async def receive_reply(self, timeout: float = 30.0) -> tuple[float, float, list[bytes]]:
        """The host's reply transfer: (time of its ENQ, time of its EOT, frames)."""
        first = await self._byte(timeout)
        if first != ENQ:
            raise LinkFailure(f"{self.name}: {first!r} instead of the host's ENQ")
        enq_at = time.perf_counter()
        self.writer.write(ACK)
        frames: list[bytes] = []
        while True:
            head = await self._byte(timeout)
            if head == EOT:
                return enq_at, time.perf_counter(), frames
            if head != STX:
                raise LinkFailure(f"{self.name}: {head!r} inside the host's transfer")
            try:
                rest = await asyncio.wait_for(self.reader.readuntil(b"\n"), timeout)
            except (asyncio.IncompleteReadError, TimeoutError) as error:
                raise LinkFailure(f"{self.name}: the host's frame was cut short") from error
            frames.append(head + rest)
            self.writer.write(ACK)

    async def alive(self) -> bool:
        """The connection is still open (no EOF seen, not closing)."""
        return not self.reader.at_eof() and not self.writer.is_closing()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


# -- the HIS -----------------------------------------------------------------------------------


class _HisProtocol(asyncio.Protocol):
    def __init__(self, his: HisServer) -> None:
        self.his = his
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.his.transports.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.his.transports.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(FS_CR)) >= 0:
            message, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
            start = message.find(VT)
            self._answer(message[start + 1 :] if start >= 0 else message)

    def _answer(self, payload: bytes) -> None:
        msh = payload.split(b"\r", 1)[0].split(b"|")
        control = msh[9] if len(msh) > 9 else b""
        self.his.number += 1
        ack = b"MSH|^~\\&|HIS||LISGW||20250101000000||ACK|HIS%d|P|2.5.1\rMSA|AA|%s\r" % (
            self.his.number,
            control,
        )
        assert self.transport is not None
        self.transport.write(VT + ack + FS_CR)
        self.his.received(payload)


class HisServer:
    """ACKs every message; ``acked[sample] = perf_counter`` when the ACK was written."""

    def __init__(self) -> None:
        self.number = 0
        self.messages = 0
        self.acked: dict[str, float] = {}
        self.port = 0
        self.transports: set[asyncio.Transport] = set()
        self._server: asyncio.Server | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _HisProtocol(self), "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    def received(self, payload: bytes) -> None:
        at = time.perf_counter()
        self.messages += 1
        found = SAMPLE_PATTERN.search(payload)
        if found is not None:
            self.acked.setdefault(found.group().decode("ascii"), at)
        ready = [w for w in self._waiters if w[0] <= self.messages]
        for entry in ready:
            self._waiters.remove(entry)
            if not entry[1].done():
                entry[1].set_result(None)

    async def wait_for(self, count: int, timeout: float) -> bool:
        """True once ``count`` messages came; False after ``timeout``."""
        if self.messages >= count:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((count, waiter))
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for transport in list(self.transports):
                transport.close()
            await self._server.wait_closed()


# -- the gateway process -------------------------------------------------------------------------


class _Notify(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if b"READY=1" in data.split(b"\n") and not self.ready.done():
            self.ready.set_result(None)


@dataclass(frozen=True)
class ProcessUsage:
    cpu_seconds: float  # user + sys
    peak_rss_mb: float
    sys_seconds: float = 0.0  # of cpu_seconds, in the kernel (syscalls, thread wake-ups)


class GatewayProcess:
    """``lisgw run`` in a subprocess, its output in ``log``; ``usage()`` from /proc."""

    def __init__(self, config: Path, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.log = workdir / "gateway.log"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 120.0) -> None:
        loop = asyncio.get_running_loop()
        path = str(self.workdir / "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        transport, notify = await loop.create_datagram_endpoint(_Notify, sock=sock)
        env = dict(os.environ, NOTIFY_SOCKET=path, PYTHONUNBUFFERED="1")
        env.pop("WATCHDOG_USEC", None)
        args = ["-m", "lisgw", "run", "--config", str(self.config)]
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, *args, stdout=log, stderr=log, env=env, cwd=str(ROOT)
            )
        try:
            exited = asyncio.ensure_future(self.process.wait())
            done, _ = await asyncio.wait(
                [notify.ready, exited], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if notify.ready not in done:
                raise RuntimeError(f"the gateway did not become ready; see {self.log}")
        finally:
            transport.close()

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("the gateway is not started")
        return self.process.pid

    def usage(self) -> ProcessUsage:
        """CPU seconds (user+sys, /proc/PID/stat) and peak RSS (VmHWM) so far."""
        with open(f"/proc/{self.pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        kernel = int(fields[12]) / ticks
        peak = 0.0
        with open(f"/proc/{self.pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) / 1024
        return ProcessUsage(cpu, peak, kernel)

    def log_errors(self) -> list[str]:
        """Lines of the gateway's log at error/critical level (or with a traceback)."""
        if not self.log.exists():
            return []
        lines = self.log.read_text("utf-8", "replace").splitlines()
        return [line for line in lines if "[critical]" in line or "Traceback" in line]

    async def stop(self, timeout: float = 60.0) -> int | None:
        if self.process is None or self.process.returncode is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            return await self.process.wait()
