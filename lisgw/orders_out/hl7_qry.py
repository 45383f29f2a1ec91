"""HL7 v2.3.1 original-mode host query (QRY^Q02) answered with DSR^Q03, or QCK^Q02 "NF".

Layer: domain (pure, sans-IO). Builds on the escaping and MSH helpers of
``lisgw.hl7.build``; every message it returns validates with hl7apy's own v2.3.1
``DSR_Q03`` / ``QCK_Q02`` structures (tests/unit/test_orders_out_qry.py).

The query (HL7 v2.3.1 §2.24 QRD, §2.25 QRF; chapter 2 "original mode display query",
QRY^Q02 = MSH, QRD, [QRF], [DSC]): QRD-4 is the query ID (our query tag), QRD-8 "who subject
filter" carries the sample ID(s), one per repetition (QRD-8.1 each: multi-tube queries ask
for several at once). The driver's ``query.sample_ids`` references say where (protocols/
hl7-v2.yaml: ``QRD-8.1``); ``lisgw.drivers.engine`` decodes them into ``Query.sample_ids``.
QRF (where/when filters) is echoed, not interpreted: analyzers put their own name in QRF-1
and, on some models, a sample number in QRF-4/5 (a driver may list those references too).

Replies (``query.reply: hl7-dsr-q03``; a QRY reaching a driver whose reply is an RSP form is
answered the same way, since a QRY cannot be answered with an RSP):

* orders found for at least one asked sample — ``DSR^Q03`` (v2.3.1 §2.14.3 display
  response): MSH, MSA ``AA`` (MSA-2 the query's control ID), QAK (QAK-1 = QRD-4, QAK-2
  ``OK``, table 0208), the QRD and QRF echoed as received, then DSP lines (§2.24.7 DSP: set
  ID, display level, data line, logical break point, result ID). lisgw's layout, one group
  per asked sample, in the order asked:

  - ``DSP|n|1|<sample ID>||<sample ID>`` — the sample (display level 1);
  - ``DSP|n|2|<analyzer test code>||<sample ID>`` — one per test to run (display level 2);
  - DSP-4 (logical break point) is the sample ID on the last line of its group.

  An asked sample with nothing queued keeps its level-1 line and no test line, so a
  multi-tube reply still accounts for every tube.
* nothing queued for any asked sample (unknown samples included) — ``QCK^Q02`` with MSA
  ``AA`` and QAK ``NF`` ("no data found"): the deferred-query acknowledgement that Mindray
  BS/CL-family host interfaces and the LIS integrations written for them use to say "no
  orders" (observed in several public LIS implementations: ``MSA|AA|…``, ``QAK|SR|NF``), and
  the only v2.3.1 structure carrying QAK without data lines (hl7apy's ``DSR_Q03`` requires
  one DSP at least).

MSH-9 names the structure (``DSR^Q03^DSR_Q03``) as ``build_ack`` does, which hl7apy needs to
pick the structure. Sources: HL7 v2.3.1 chapter 2 (QRD, QRF, DSP, QAK, DSR/QCK structures as
hl7apy 1.3 tabulates them); public LIS code answering Mindray QRY^Q02 with QCK^Q02 + DSR^Q03.

Not done: the Mindray BS/CL ``mindray`` form. Its DSR^Q03 is a fixed positional layout (DSP-1
to DSP-28 patient and sample fields, DSP-29 on the tests, sent after a separate QCK^Q02 and
acknowledged with ACK^Q03); no Mindray manual text was available to confirm the positions,
so that form stays unimplemented (the responder logs it and ACKs).
"""

from __future__ import annotations

from collections.abc import Sequence

from lisgw.drivers.compiled import CompiledProfile
from lisgw.errors import CodecError
from lisgw.hl7.build import _encode, _msh, _reencode_field, _segment, escape
from lisgw.hl7.message import Hl7Message, Segment
from lisgw.orders_out.model import SampleOrders

__all__ = ["QRY_REPLIES", "build_qry_reply"]

QRY_REPLIES = frozenset({"hl7-dsr-q03"})


def build_qry_reply(
    profile: CompiledProfile,
    query: Hl7Message,
    samples: Sequence[SampleOrders],
    *,
    control_id: str,
    now_timestamp: str,
    encoding: str = "utf-8",
) -> bytes:
    """DSR^Q03 listing ``samples``' tests, or QCK^Q02 with QAK ``NF`` when none has any."""
    qrd = query.segment("QRD")
    if qrd is None:
        raise CodecError(
            f"QRY {query.control_id or '(no control ID)'} has no QRD segment", where="QRD"
        )
    found = any(sample.tests for sample in samples)
    msh = query.msh
    ours = (_reencode_field(msh, 5), _reencode_field(msh, 6))
    theirs = (_reencode_field(msh, 3), _reencode_field(msh, 4))
    message_type = "DSR^Q03^DSR_Q03" if found else "QCK^Q02^QCK_Q02"
    segments = [
        _msh(
            "|".join(ours),
            "|".join(theirs),
            now_timestamp,
            message_type,
            control_id,
            query.processing_id or "P",
            query.version or "2.3.1",
        ),
        _segment("MSA", ("AA", escape(query.control_id))),
        _segment("QAK", (_reencode_field(qrd, 4), "OK" if found else "NF")),
    ]
    if found:
        segments.append(_echo(qrd))
        qrf = query.segment("QRF")
        if qrf is not None:
            segments.append(_echo(qrf))
        segments.extend(_display_lines(profile, samples))
    return _encode(segments, encoding)


def _echo(segment: Segment) -> str:
    """The segment as received, rewritten with the standard delimiters and escapes."""
    fields = [_reencode_field(segment, n) for n in range(1, len(segment) + 1)]
    return _segment(segment.name, fields)


def _display_lines(profile: CompiledProfile, samples: Sequence[SampleOrders]) -> list[str]:
    lines: list[str] = []
    for sample in samples:
        sample_id = escape(profile.outgoing_text(sample.sample_id))
        group = [("1", sample_id)] + [("2", escape(test.code)) for test in sample.tests]
        for index, (level, data) in enumerate(group, 1):
            last = index == len(group)
            number = str(len(lines) + 1)
            lines.append(
                _segment("DSP", (number, level, data, sample_id if last else "", sample_id))
            )
    return lines
