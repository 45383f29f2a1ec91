"""The error tree of lisgw: one root, one branch per layer.

Layer: shared by every layer; imports nothing from lisgw.

``ProtocolError`` says a byte stream broke a protocol. Its two children say who broke it,
as h11 does: ``RemoteProtocolError`` when the peer sent something we cannot accept,
``LocalProtocolError`` when our own caller asked the protocol core for something the
protocol does not allow (sending while receiving, acknowledging no frame).
"""

from __future__ import annotations


class LisgwError(Exception):
    """Root of every error lisgw raises on purpose."""


class ProtocolError(LisgwError):
    """A protocol (E1381, E1394, MLLP, HL7) was broken.

    ``offset`` is the byte offset in the stream where the problem was seen, when known.
    """

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol."""


class LocalProtocolError(ProtocolError):
    """Our own code asked the protocol core for something the protocol forbids."""


class CodecError(LisgwError):
    """A record or message could not be encoded or decoded.

    ``where`` names the place: a record index, segment, field position ("R.4.2", "OBX-5").
    """

    def __init__(self, message: str, *, where: str | None = None) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where


class ConfigError(LisgwError):
    """A configuration or driver profile is invalid; carries every problem found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class StoreError(LisgwError):
    """The durable store failed or refused a unit of work."""
