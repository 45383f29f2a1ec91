"""Reading the HIS's acknowledgment of a result message (HL7 v2.5.1 §2.9, MSA, ERR).

Layer: protocol (pure). Imports lisgw.hl7.message and lisgw.errors; no I/O, no clock. The
outbox dispatcher reads each reply with ``read_ack``: AA (or CA) delivers the row, AE/AR
(CE/CR) move it to dead letter with ``text`` as the reason, a control ID that is not the one
sent is not an answer to it.

``text`` is MSA-3 when the HIS wrote one; otherwise the ERR segment's words: ERR-3.2 (v2.5+
CWE text) or ERR-8 (user message), else ERR-1.4.2 (v2.3.1 ELD code text). Any message
carrying an MSA is read (ACK^R01, or an application acknowledgment); a reply without MSA, or
with an acknowledgment code outside HL7 table 0008, raises ``CodecError``.
"""

from __future__ import annotations

from dataclasses import dataclass

from lisgw.errors import CodecError
from lisgw.hl7.build import ACK_CODES
from lisgw.hl7.message import Hl7Message, Segment, parse_message

__all__ = ["AckOutcome", "read_ack"]


@dataclass(frozen=True, slots=True)
class AckOutcome:
    """MSA-1 (table 0008), MSA-2 (the control ID acknowledged) and the HIS's reason."""

    code: str
    control_id: str
    text: str = ""

    @property
    def accepted(self) -> bool:
        """AA or CA: the HIS took the message."""
        return self.code in ("AA", "CA")


def read_ack(data: bytes, encoding: str = "utf-8") -> AckOutcome:
    """The acknowledgment in one MLLP payload (lenient decoding: the reason is free text)."""
    message = parse_message(data, encoding=encoding, lenient=True)
    msa = message.segment("MSA")
    if msa is None:
        raise CodecError(
            f"{message.message_type or 'message'} is not an acknowledgment", where="MSA"
        )
    code = msa.get(1).strip().upper()
    if code not in ACK_CODES:
        raise CodecError(f"acknowledgment code {code!r} not in HL7 table 0008", where="MSA-1")
    return AckOutcome(code, msa.get(2).strip(), msa.get(3).strip() or _error_text(message))


def _error_text(message: Hl7Message) -> str:
    texts = [text for err in message.segments("ERR") if (text := _err_text(err))]
    return "; ".join(texts)


def _err_text(err: Segment) -> str:
    for value in (err.get(3, 2), err.get(8), err.get(1, 4, subcomponent=2)):
        if value.strip():
            return value.strip()
    return ""
