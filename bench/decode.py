"""Decode throughput: ASTM framed stream → records → messages, and HL7 parse/build.

Prints the machine, then one line per stage. Targets (one core, issue 3): ASTM framed
stream → records ≥ 20 MB/s; HL7 ORU^R01 with 40 OBX: parse ≥ 1,000/s, build ≥ 500/s.

The ASTM stream is corpus-shaped: the records of every framed corpus result capture,
re-framed into E1381 sessions of ≤ 240-character frames (ETB-split, checksummed), repeated to
about 8 MB. Run: `python bench/decode.py [--seconds S]`.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lisgw.astm import events as ev  # noqa: E402
from lisgw.astm.events import NEED_DATA  # noqa: E402
from lisgw.astm.frames import ENQ, EOT, build_frames  # noqa: E402
from lisgw.astm.link import AstmLink, LinkOptions  # noqa: E402
from lisgw.astm.records import MessageAssembler  # noqa: E402
from lisgw.decode import decode_capture  # noqa: E402
from lisgw.drivers import default_catalogue, normalize  # noqa: E402
from lisgw.hl7.message import parse_message  # noqa: E402
from lisgw.hl7.mllp import NEED_DATA as MLLP_NEED_DATA  # noqa: E402
from lisgw.hl7.mllp import MllpFramer, MllpMessage  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus"
CATALOGUE = default_catalogue()
SOURCES = [
    "astm/sysmex_xn550/sysmex_xn550_cbc_results.bin",
    "astm/roche_cobas_e411/roche_cobas_e411_multi_frame_results.bin",
    "astm/horiba_pentra_xlr/horiba_pentra_xlr_cbc_diff_results.bin",
    "astm/roche_cobas_c311/roche_cobas_c311_H7600_batch_frame_split_midrecord.bin",
    "astm/stago_sta_satellite_max/stago_sta_satellite_max_coag_results.bin",
    "astm/cepheid_genexpert/cepheid_genexpert_mtb_rif_astm_results.bin",
]


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
        f"Python {platform.python_version()} | {platform.system()} {platform.release()}"
    )


def session_records(path: Path) -> list[bytes]:
    link = AstmLink(LinkOptions(lenient=True))
    link.receive_data(path.read_bytes(), 0.0)
    records: list[bytes] = []
    while (event := link.next_event()) is not NEED_DATA:
        if isinstance(event, ev.FrameReceived):
            link.acknowledge(0.0)
        elif isinstance(event, ev.RecordReceived):
            records.append(event.text)
    return records


def build_stream(target: int) -> tuple[bytes, int]:
    sessions = []
    for name in SOURCES:
        records = session_records(CORPUS / name)
        text = b"".join(r + b"\r" for r in records)
        sessions.append(bytes([ENQ]) + b"".join(build_frames(text)) + bytes([EOT]))
    unit = b"".join(sessions)
    repeat = max(1, target // len(unit))
    return unit * repeat, repeat * len(sessions)


def link_records(stream: bytes) -> int:
    """Records through the link in batch mode: one RecordsReceived per acknowledged frame."""
    link = AstmLink(LinkOptions(batch_records=True))
    link.receive_data(stream, 0.0)
    count = 0
    while (event := link.next_event()) is not NEED_DATA:
        if isinstance(event, ev.RecordsReceived):
            count += len(event.records)
        elif isinstance(event, ev.FrameReceived):
            link.acknowledge(0.0)
    return count


def link_and_codec(stream: bytes) -> int:
    link = AstmLink(LinkOptions(batch_records=True))
    assembler = MessageAssembler()
    link.receive_data(stream, 0.0)
    messages = 0
    while (event := link.next_event()) is not NEED_DATA:
        if isinstance(event, ev.RecordsReceived):
            for text in event.records:
                for message in assembler.feed(text):
                    messages += 1
                    for record in message.records:
                        record.repeats(3)  # force the lazy component split
        elif isinstance(event, ev.FrameReceived):
            link.acknowledge(0.0)
    return messages


def link_codec_normalize(stream: bytes) -> int:
    link = AstmLink(LinkOptions(batch_records=True))
    assembler = MessageAssembler()
    link.receive_data(stream, 0.0)
    results = 0
    while (event := link.next_event()) is not NEED_DATA:
        if isinstance(event, ev.RecordsReceived):
            for text in event.records:
                for message in assembler.feed(text):
                    normalized = normalize(message, CATALOGUE.detect(message))
                    results += sum(len(s.results) for s in normalized.specimens)
        elif isinstance(event, ev.FrameReceived):
            link.acknowledge(0.0)
    return results


def _per_call(fn: Callable[[], object], seconds: float) -> float:
    """Microseconds per call of ``fn`` (CPU time), repeated for about ``seconds``."""
    calls, spent = 0, 0.0
    while spent < seconds:
        start = time.process_time()
        for _ in range(20):
            fn()
        spent += time.process_time() - start
        calls += 20
    return spent / calls * 1e6


def _astm_messages(data: bytes) -> list[object]:
    link = AstmLink(LinkOptions(lenient=True))
    assembler = MessageAssembler()
    link.receive_data(data, 0.0)
    link.close(0.0)
    messages: list[object] = []
    while (event := link.next_event()) is not NEED_DATA:
        if isinstance(event, ev.FrameReceived):
            link.acknowledge(0.0)
        elif isinstance(event, ev.RecordReceived):
            messages.extend(assembler.feed(event.text))
    messages.extend(assembler.flush())
    return messages


def _hl7_messages(data: bytes) -> list[object]:
    framer = MllpFramer()
    framer.receive_data(data)
    framer.close()
    messages: list[object] = []
    while (event := framer.next_event()) is not MLLP_NEED_DATA:
        if isinstance(event, MllpMessage):
            messages.append(parse_message(event.payload))
    return messages


def normalization_cost(seconds: float) -> None:
    """Per corpus capture: raw decode (bytes → decoded messages) next to driver detection and
    normalization of those messages (→ model), in microseconds per message."""
    print(f"\n{'per message (us, CPU)':<46} {'decode':>8} {'detect+normalize':>17} {'ratio':>6}")
    captures = sorted(CORPUS.glob("astm/*/*.bin")) + sorted(CORPUS.glob("hl7/*/*.bin"))
    for path in captures:
        data = path.read_bytes()
        is_hl7 = path.parts[-3] == "hl7"
        if not is_hl7 and (b"\x02" not in data):
            continue  # unframed record files: no link stage to compare
        read = _hl7_messages if is_hl7 else _astm_messages
        messages = read(data)
        if not messages:
            continue
        count = len(messages)
        decode_us = _per_call(lambda data=data, read=read: read(data), seconds) / count

        def normalize_all(messages: list[object] = messages) -> None:
            for message in messages:
                normalize(message, CATALOGUE.detect(message))  # type: ignore[arg-type]

        normalize_us = _per_call(normalize_all, seconds) / count
        name = path.stem[:44]
        print(f"{name:<46} {decode_us:8.0f} {normalize_us:17.0f} {normalize_us / decode_us:6.2f}")


def timed(label: str, fn: Callable[[bytes], int], stream: bytes, unit: str, sessions: int) -> None:
    best = float("inf")
    count = 0
    for _ in range(3):
        start = time.process_time()
        count = fn(stream)
        best = min(best, time.process_time() - start)
    mb = len(stream) / 1e6
    print(
        f"{label:<44} {mb / best:8.1f} MB/s  {sessions / best:9.0f} sessions/s  "
        f"{count / best:10.0f} {unit}/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=8.0)
    parser.add_argument("--seconds", type=float, default=2.0, help="per HL7 measurement")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"date: {time.strftime('%Y-%m-%d')}")
    stream, sessions = build_stream(int(args.megabytes * 1e6))
    print(f"ASTM stream: {len(stream) / 1e6:.1f} MB, {sessions} sessions (CPU time, best of 3)")
    print("link stages: LinkOptions(batch_records=True), one RecordsReceived per frame")
    timed("framed stream -> records (link)", link_records, stream, "records", sessions)
    timed("-> records -> E1394 messages (link+codec)", link_and_codec, stream, "msgs", sessions)
    timed("-> normalized (link+codec+normalize)", link_codec_normalize, stream, "results", sessions)
    start = time.process_time()
    messages = decode_capture(stream)
    spent = time.process_time() - start
    print(
        f"{'lisgw decode pipeline (decode_capture)':<44} {len(stream) / 1e6 / spent:8.1f} MB/s"
        f"  {len(messages) / spent:9.0f} msgs/s"
    )
    normalization_cost(args.seconds / 8)
    sys.path.insert(0, str(ROOT / "bench"))
    import hl7_codec

    figures = hl7_codec.run(args.seconds)
    for key, value in figures.items():
        print(f"HL7 {key:<40} {value:12.1f}")


if __name__ == "__main__":
    main()
