"""Generic normalization, kept for the callers of issue 3; the rules now live in profiles.

Layer: domain (pure). The generic rules are data since issue 4: protocols/astm-e1394.yaml and
protocols/hl7-v2.yaml give the standard positions, drivers/astm-generic.yaml and
drivers/hl7-generic.yaml the fallbacks for unseen analyzers, and ``lisgw.drivers.engine``
applies them. These two functions normalize with the generic drivers, without detection;
``lisgw.decode`` and the gateway use the catalogue (``lisgw.drivers``) instead.
"""

from __future__ import annotations

from lisgw.astm.message import AstmMessage
from lisgw.drivers import composite_value, default_catalogue
from lisgw.drivers import engine as _engine
from lisgw.hl7.message import Hl7Message
from lisgw.model import NormalizedMessage

__all__ = ["composite_value", "normalize_astm", "normalize_hl7"]


def normalize_astm(message: AstmMessage, *, offset: int = 0) -> NormalizedMessage:
    """One E1394 message (H … L) → a NormalizedMessage, by the generic driver."""
    return _engine.normalize_astm(message, default_catalogue().fallback("astm"), offset=offset)


def normalize_hl7(message: Hl7Message, *, offset: int = 0) -> NormalizedMessage:
    """One HL7 v2 message → a NormalizedMessage, by the generic driver."""
    return _engine.normalize_hl7(message, default_catalogue().fallback("hl7"), offset=offset)
