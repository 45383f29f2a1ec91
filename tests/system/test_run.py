"""``lisgw run`` end to end: the gateway as a subprocess, the HIS and an analyzer simulated.

Orders come in from the HIS (ORM^O01 over MLLP, ACKed AA), an analyzer replays a corpus
capture (Sysmex XN-550 CBC, ../shared/corpus/astm/sysmex_xn550/sysmex_xn550_cbc_results.bin,
read at test time) over ASTM E1381 on TCP, and the results go out to the HIS simulator
(one ORU^R01, ACKed AA) — on SQLite and on PostgreSQL (a fresh database). Also: readiness,
watchdog and stopping notifications over a real ``$NOTIFY_SOCKET``, SIGTERM with a
half-received transfer (incomplete, never results), exit statuses, JSON logs, no patient data
in the logs. The orders are synthetic, with invented patient data; the capture's patient name
was replaced in the corpus (de-identified).

The harness (ports, processes, databases, waits) is in tests/system/conftest.py. The
SystemdNotifier tests at the end are plain functions with a real datagram socket.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.trial import unittest

from lisgw.his.ack import read_ack
from lisgw.hl7.message import Hl7Message, parse_message
from lisgw.hl7.mllp import NEED_DATA as MLLP_NEED_DATA
from lisgw.hl7.mllp import MllpFramer, MllpMessage
from lisgw.services.notify import SystemdNotifier, watchdog_interval
from lisgw.sim.analyzer import capture_messages
from lisgw.sim.his import AckMode
from tests.system.conftest import (
    HOST,
    REPO,
    ResendingAnalyzer,
    Workdir,
    connect_partial,
    corpus_file,
    eventually,
    free_port,
    partial_frames,
    query_store,
    send_to_gateway,
    start_gateway,
    start_his,
    store_url_of,
    within,
    workdir_and_store,
    write_config,
)

CAPTURE = "astm/sysmex_xn550/sysmex_xn550_cbc_results.bin"
MINDRAY = "hl7/mindray_bc5130/mindray_bc5130_hl7_oru_r01_cbc.bin"
SAMPLE = "27"  # the capture's sample ID (O.3, right-aligned with spaces)
ORM = (
    b"MSH|^~\\&|HIS|WARD|LISGW|LAB|20260101115900||ORM^O01^ORM_O01|ORM0027|P|2.5.1\r"
    b"PID|1||PAT0027^^^HIS^MR||TESTPATIENT^ALICE||19800101|F\r"
    b"ORC|NW|ORD0027|27||||||20260101115800\r"
    b"OBR|1|ORD0027|27|HEM-WBC^Leukocytes^L|||20260101115000\r"
    b"ORC|NW|ORD0027|27||||||20260101115800\r"
    b"OBR|2|ORD0027|27|HEM-HGB^Hemoglobin^L|||20260101115000\r"
)
# Words that must never reach the logs: the order's patient, the capture's patient name.
PATIENT_WORDS = ("TESTPATIENT", "ALICE", "PAT0027", "Brown")


def observations(message: Hl7Message) -> dict[str, str]:
    """OBX-3.1 → OBX-5 of a result message."""
    return {obx.get(3): obx.get(5) for obx in message.segments("OBX")}


class _EndToEnd:
    """Orders in, results out, on one backend (the subclasses choose it)."""

    backend = "sqlite"
    log_format = "text"
    timeout = 120

    async def test_orders_in_results_out(self) -> None:
        case: unittest.TestCase = self  # type: ignore[assignment]
        workdir, store_url = workdir_and_store(case, self.backend)
        his, his_port = await start_his(case)
        orders_port, analyzer_port = free_port(), free_port()
        config = write_config(
            workdir.path,
            his_results_port=his_port,
            his_orders_port=orders_port,
            analyzer_port=analyzer_port,
            store_url=store_url,
        )
        gateway = await start_gateway(
            case,
            config,
            workdir,
            log_format=self.log_format,
            watchdog_usec=400_000,
        )

        # Orders in: committed, then AA.
        ack = read_ack(await send_to_gateway(orders_port, ORM))
        assert (ack.code, ack.control_id) == ("AA", "ORM0027"), gateway.log_tail()

        # Results in: the capture replayed by the analyzer simulator.
        analyzer = ResendingAnalyzer(analyzer_port, name="XN-550")
        messages = capture_messages(corpus_file(CAPTURE))
        assert len(messages) == 1
        await within(analyzer.send(0, messages[0]), 30, "the capture to be acknowledged")
        await analyzer.close()

        # Results out: one ORU^R01 for the specimen, linked to the order, ACKed AA.
        await within(his.wait_for(1), 30, "the ORU^R01 at the HIS")
        assert len(his.received) == 1
        received = his.received[0]
        assert received.message_type.startswith("ORU^R01"), received.message_type
        assert received.answer is AckMode.ACCEPT
        oru = parse_message(received.payload)
        assert oru.control_id == received.control_id
        orc, obr = oru.segment("ORC"), oru.segment("OBR")
        assert orc is not None and obr is not None
        assert (orc.get(2), obr.get(2), obr.get(3)) == ("ORD0027", "ORD0027", SAMPLE)
        values = observations(oru)
        assert values["HEM-WBC"] == "8.13"
        assert values["HEM-HGB"] == "8.0"
        assert values["HEM-PLT"] == "99"
        pid = oru.segment("PID")
        assert pid is not None and pid.get(3) == "PAT0027"

        await eventually(lambda: gateway.notify.count("WATCHDOG=1") >= 2, 10, "watchdog pings")
        # The delivery is recorded once the pass ends: wait for it before stopping.
        await eventually(lambda: "1 delivered" in gateway.log_text(), 10, "the delivery record")

        assert await gateway.terminate() == 0, gateway.log_tail()
        assert gateway.notify.count("READY=1") == 1
        assert gateway.notify.count("STOPPING=1") == 1

        url = store_url_of(workdir.path, store_url)
        outbox = query_store(url, "SELECT state, control_id, sample_id FROM outbox")
        assert outbox == [("delivered", received.control_id, SAMPLE)]
        matched = query_store(
            url, "SELECT his_code FROM results WHERE match = 'matched' ORDER BY his_code"
        )
        assert matched == [("HEM-HGB",), ("HEM-WBC",)]
        orders = query_store(url, "SELECT placer, state FROM orders")
        assert orders == [("ORD0027", "complete")]

        log = gateway.log_text()
        for word in PATIENT_WORDS:
            assert word not in log, f"patient data {word!r} in the log"
        if self.log_format == "json":
            lines = [json.loads(line) for line in log.splitlines() if line.strip()]
            (ready,) = [line for line in lines if line["message"].startswith("gateway ready")]
            # gc.freeze() at start-up: the collector's full passes skip what start-up built.
            assert ready["frozen"] > 10_000, ready
            assert {line["level"] for line in lines} <= {"info", "warn", "error", "critical"}


class TestRunOnSqlite(_EndToEnd, unittest.TestCase):
    backend = "sqlite"

    async def test_sigterm_mid_transfer_leaves_it_incomplete(self) -> None:
        workdir = Workdir()
        self.addCleanup(workdir.remove)
        his, his_port = await start_his(self)
        analyzer_port = free_port()
        config = write_config(
            workdir.path,
            his_results_port=his_port,
            his_orders_port=free_port(),
            analyzer_port=analyzer_port,
            send_unsolicited=True,
        )
        gateway = await start_gateway(self, config, workdir)

        message = capture_messages(corpus_file(CAPTURE))[0]
        instrument = await connect_partial(analyzer_port)
        self.addCleanup(instrument.abort)
        frames = partial_frames(message[:-1], 3)  # no L record: the message cannot end
        assert await instrument.send(frames) == 3

        assert await gateway.terminate() == 0, gateway.log_tail()
        await within(instrument.closed, 5, "the gateway to close the line")
        url = store_url_of(workdir.path, None)
        assert query_store(url, "SELECT count(*) FROM frames") == [(3,)]
        assert query_store(url, "SELECT state FROM messages") == [("incomplete",)]
        assert query_store(url, "SELECT count(*) FROM results") == [(0,)]
        assert query_store(url, "SELECT count(*) FROM sessions WHERE closed_at IS NULL") == [(0,)]
        assert his.received == []

    async def test_hl7_analyzer_over_mllp(self) -> None:
        workdir = Workdir()
        self.addCleanup(workdir.remove)
        his, his_port = await start_his(self)
        hl7_port = free_port()
        mindray = {
            "name": "bc-5130",
            "protocol": "hl7",
            "driver": "mindray-bc",
            "transport": "tcp-server",
            "host": HOST,
            "port": hl7_port,
        }
        config = write_config(
            workdir.path,
            his_results_port=his_port,
            his_orders_port=free_port(),
            analyzer_port=free_port(),
            send_unsolicited=True,
            extra_connections=[mindray],
        )
        gateway = await start_gateway(self, config, workdir)

        payloads = mllp_payloads(corpus_file(MINDRAY))
        assert payloads, "no complete MLLP message in the capture"
        sent = parse_message(payloads[0], lenient=True)
        ack = read_ack(await send_to_gateway(hl7_port, payloads[0]))
        assert (ack.code, ack.control_id) == ("AA", sent.control_id), gateway.log_tail()

        await within(his.wait_for(1), 30, "the ORU^R01 at the HIS")
        oru = parse_message(his.received[0].payload)
        obr = oru.segment("OBR")
        assert obr is not None and obr.get(3) == "5"
        values = observations(oru)
        assert (values["HEM-WBC"], values["HEM-HGB"]) == ("5.43", "12.6")
        assert await gateway.terminate() == 0, gateway.log_tail()
        assert "TESTONE" not in gateway.log_text()  # the capture's (replaced) patient name


def mllp_payloads(data: bytes) -> list[bytes]:
    """The HL7 messages of an MLLP capture, as the gateway's framer reads them."""
    framer = MllpFramer()
    framer.receive_data(data)
    framer.close()
    payloads = []
    while (event := framer.next_event()) is not MLLP_NEED_DATA:
        if isinstance(event, MllpMessage) and event.complete:
            payloads.append(event.payload)
    return payloads


class TestRunOnPostgresql(_EndToEnd, unittest.TestCase):
    backend = "postgresql"
    log_format = "json"


# -- exit statuses (plain subprocesses) ------------------------------------------------------


def run_cli(config: Path, seconds: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lisgw", "run", "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=seconds,
        check=False,
    )


def test_configuration_errors_are_all_printed_and_exit_2() -> None:
    workdir = Workdir()
    try:
        config = workdir.path / "bad.yaml"
        config.write_text(
            "his:\n  results: {host: 127.0.0.1, port: 70000}\n"
            "connections:\n  - {name: a, protocol: astm, transport: tcp-server, port: -1}\n",
            encoding="utf-8",
        )
        done = run_cli(config)
        assert done.returncode == 2, done.stderr
        assert "his.results.port" in done.stderr
        assert "connections[0].port" in done.stderr
        assert "problem(s): not started" in done.stderr
        assert done.stdout == ""
    finally:
        workdir.remove()


def test_an_unreachable_store_exits_1() -> None:
    workdir = Workdir()
    try:
        closed_port = free_port()  # nothing listens there
        config = write_config(
            workdir.path,
            his_results_port=free_port(),
            his_orders_port=free_port(),
            analyzer_port=free_port(),
            store_url=f"postgresql+psycopg://postgres@127.0.0.1:{closed_port}/none",
        )
        done = run_cli(config)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "gateway not started" in done.stdout
    finally:
        workdir.remove()


def test_a_port_in_use_exits_1() -> None:
    workdir = Workdir()
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        taken.bind((HOST, 0))
        taken.listen(1)
        config = write_config(
            workdir.path,
            his_results_port=free_port(),
            his_orders_port=free_port(),
            analyzer_port=taken.getsockname()[1],
        )
        done = run_cli(config)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "gateway not started" in done.stdout
        assert "gateway stopped" in done.stdout  # what had started was stopped in order
        assert "0 frame flushes for 0 frames" in done.stdout  # the stop line's counters
    finally:
        taken.close()
        workdir.remove()


# -- sd_notify (plain functions, a real datagram socket) -------------------------------------


def _bound_socket() -> tuple[socket.socket, str]:
    directory = tempfile.mkdtemp(prefix="lisgw-notify-")
    path = os.path.join(directory, "notify.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.settimeout(5)
    return receiver, path


def test_notifier_sends_each_state_as_one_datagram() -> None:
    receiver, path = _bound_socket()
    try:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": path})
        assert notifier.enabled
        assert notifier.ready("running:  2 links\nnow")
        assert receiver.recv(4096) == b"READY=1\nSTATUS=running: 2 links now"
        assert notifier.watchdog()
        assert receiver.recv(4096) == b"WATCHDOG=1"
        assert notifier.stopping()
        assert receiver.recv(4096) == b"STOPPING=1"
        notifier.close()
    finally:
        receiver.close()
        os.unlink(path)
        os.rmdir(os.path.dirname(path))


def test_notifier_abstract_socket() -> None:
    name = f"lisgw-test-{os.getpid()}"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind("\0" + name)
    receiver.settimeout(5)
    try:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready()
        assert receiver.recv(4096) == b"READY=1"
        notifier.close()
    finally:
        receiver.close()


def test_notifier_without_systemd_does_nothing() -> None:
    for environ in ({}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "relative/path"}):
        notifier = SystemdNotifier(environ)
        assert not notifier.enabled
        assert not notifier.ready()
        assert not notifier.watchdog()


def test_notifier_survives_a_missing_socket() -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": "/nonexistent/lisgw/notify.sock"})
    assert notifier.enabled
    assert not notifier.ready()
    assert not notifier.watchdog()


def test_watchdog_interval() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, pid=42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "41"}, pid=42) is None
    for value in ("", "0", "-5", "abc"):
        assert watchdog_interval({"WATCHDOG_USEC": value}) is None
    assert watchdog_interval({}) is None
