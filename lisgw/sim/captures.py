"""Captures the simulators replay: files read into the messages an analyzer sends.

Layer: simulator helpers (pure but for reading the file). Three shapes
(simulators/captures/README.md):

* ASTM: framed E1381 bytes (a corpus ``.bin``) or E1394 records one per line (``.astm``):
  ``lisgw.sim.analyzer.capture_messages`` gives each message's records;
* HL7: MLLP blocks (a corpus ``.bin``, complete blocks only, as the gateway's framer reads
  them) or segments one per line (``.hl7``), a message at each MSH: ``hl7_messages``.

Errors name the file: a missing or unreadable file, a file with no message of the protocol.
"""

from __future__ import annotations

from pathlib import Path

from lisgw.errors import LisgwError
from lisgw.hl7.mllp import NEED_DATA, MllpFramer, MllpMessage
from lisgw.sim.analyzer import capture_messages

__all__ = [
    "astm_messages",
    "hl7_messages",
    "mllp_payloads",
    "read_astm_messages",
    "read_capture",
    "read_hl7_messages",
]

_VT = b"\x0b"


def read_capture(path: Path) -> bytes:
    """The file's bytes; LisgwError naming it when it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as error:
        raise LisgwError(f"capture {path}: cannot read: {error.strerror or error}") from None


def mllp_payloads(data: bytes) -> list[bytes]:
    """The complete HL7 messages of an MLLP capture, as the gateway's framer reads them."""
    framer = MllpFramer()
    framer.receive_data(data)
    framer.close()
    payloads = []
    while (event := framer.next_event()) is not NEED_DATA:
        if isinstance(event, MllpMessage) and event.complete:
            payloads.append(event.payload)
    return payloads


def hl7_messages(data: bytes) -> list[bytes]:
    """HL7 messages (segments ended by CR) from MLLP blocks or from segment lines."""
    if _VT in data:
        return mllp_payloads(data)
    messages: list[list[bytes]] = []
    for segment in data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"):
        if not segment.strip():
            continue
        if segment.startswith(b"MSH") or not messages:
            messages.append([])
        messages[-1].append(segment)
    return [b"".join(s + b"\r" for s in message) for message in messages if message]


def astm_messages(data: bytes) -> list[tuple[bytes, ...]]:
    """ASTM messages (tuples of records) from framed bytes or record lines."""
    return capture_messages(data)


def read_astm_messages(path: Path) -> list[tuple[bytes, ...]]:
    """The ASTM messages of a capture file; LisgwError when it holds none."""
    messages = [m for m in astm_messages(read_capture(path)) if m and m[0][:1] == b"H"]
    if not messages:
        raise LisgwError(f"capture {path}: no ASTM message (H record) in it")
    return messages


def read_hl7_messages(path: Path) -> list[bytes]:
    """The HL7 messages of a capture file; LisgwError when it holds none."""
    messages = [m for m in hl7_messages(read_capture(path)) if m.startswith(b"MSH")]
    if not messages:
        raise LisgwError(f"capture {path}: no HL7 message (MSH segment) in it")
    return messages
