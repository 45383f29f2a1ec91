"""Orders going out to analyzers: host-query replies and batch order downloads, as data.

Layer: domain (pure, sans-IO). No Twisted, no SQLAlchemy, no clock, no logging: the builders
take the driver's compiled rules (``lisgw.drivers.CompiledProfile``), the query as the
analyzer sent it and the tests queued for its samples, and return the records (ASTM) or the
bytes (HL7) to send. The services (lisgw.services.responder, lisgw.services.download) look
the tests up in the store, send what these build, and record the outcome.

* ``lisgw.orders_out.model`` — ``SampleOrders`` (one sample's queued tests) and
  ``group_by_sample``;
* ``lisgw.orders_out.astm`` — E1394 order messages (H, P, O …, L) for a download or a reply
  (``astm-orders``, ``roche-tsdwn``), and the samples a Q record asks for;
* ``lisgw.orders_out.hl7`` — the RSP^K11 reply to a QBP (``hl7-rsp-k11``,
  ``hl7-qbp-z03-rsp``);
* ``lisgw.orders_out.hl7_qry`` — the DSR^Q03 (or QCK^Q02 "NF") reply to a v2.3.1 QRY^Q02
  (``hl7-dsr-q03``).
"""

from __future__ import annotations

from lisgw.orders_out.astm import (
    ASTM_REPLIES,
    AskedSample,
    asked_samples,
    build_astm_orders,
    is_query_abort,
)
from lisgw.orders_out.hl7 import HL7_REPLIES, build_hl7_reply
from lisgw.orders_out.hl7_qry import QRY_REPLIES, build_qry_reply
from lisgw.orders_out.model import OrderedTest, Queued, SampleOrders, group_by_sample

__all__ = [
    "ASTM_REPLIES",
    "HL7_REPLIES",
    "QRY_REPLIES",
    "AskedSample",
    "OrderedTest",
    "Queued",
    "SampleOrders",
    "asked_samples",
    "build_astm_orders",
    "build_hl7_reply",
    "build_qry_reply",
    "group_by_sample",
    "is_query_abort",
]
