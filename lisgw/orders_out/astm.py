"""E1394 order messages for an analyzer: batch downloads and replies to host queries.

Layer: domain (pure, sans-IO). Returns the records of one message (H, then per sample a P
and an O record, then L), each encoded without its CR terminator, ready for
``AstmLinkProtocol.send_message`` (E1381 frames them).

Reply forms (``query.reply`` of the driver, drivers/README.md):

* ``astm-orders`` (E1394 §9.4, LIS02-A2): ``H|\\^&|||LISGW|||||<analyzer>||P|LIS2-A2|<time>``;
  per sample ``P|n|<patient id>|||<name>`` and ``O|n|<sample>||<tests>|<priority>|…`` with
  the driver's ``orders.sample_id_field`` (O.3 by default), ``orders.test_id_template`` per
  test (one repeat each), ``orders.priority_field`` (O.6, §9.4.6 S/A/R), O.12 action code
  ``N`` (§9.4.12: new order for a new specimen) and O.26 report type ``O`` (§9.4.26: order
  record). The VITROS 3600 LIS reply in the corpus has this shape; the Erba multi-tube
  query (several samples in the repeats of Q.3) gets one P/O pair per sample, in the order
  asked.
* ``roche-tsdwn`` (cobas host interface): ``H|\\^&|||host^1|||||<analyzer>|TSDWN^REPLY|P|1``
  (``TSDWN^BATCH`` for a download), ``P|n``, ``O|n|<sample>|<seq^rack^pos^^type^container>|
  ^^^<code>^\\…|R||||||A||||1||||||||||O``: O.4 echoes components 4 on of the TSREQ's Q.3
  (``^^0000000387^587^0^2^^S1^SC``: sequence, rack, position, sample type, container), the
  analyzer matching the reply to the tube by them; O.12 ``A`` (add), O.16 the sample-type
  digit of Q.3.8 (``S1`` → 1).

"No orders" (an unknown sample, or one whose tests are all sent or cancelled): the same
message with that sample's O record carrying no test and O.26 ``Y`` — E1394 §9.4.26 "no
order on record for this test (in response to a query)". An O record per sample (rather than
the alternative, a Q record with §12.1.13 status ``X`` for the whole query) is what lets one
reply answer a multi-tube query where some samples have orders and some have none.

Text sent to the analyzer goes through the driver's charset rules
(``CompiledProfile.outgoing_text``: transliteration, upper case) and is encoded with the
driver's ``charset.encoding``; a character the encoding cannot carry raises ``CodecError``.
A reply uses the query's delimiters (Erba sends `` H|`^& ``); a download the standard ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lisgw.astm.escapes import DEFAULT_DELIMITERS, Delimiters
from lisgw.astm.message import AstmMessage
from lisgw.astm.records import Record, Value, encode_record
from lisgw.drivers.compiled import CompiledProfile
from lisgw.drivers.references import RefSpec
from lisgw.errors import ConfigError
from lisgw.orders_out.model import SampleOrders, astm_priority

__all__ = [
    "ASTM_FORMS",
    "ASTM_REPLIES",
    "AskedSample",
    "asked_samples",
    "build_astm_orders",
    "is_query_abort",
]

ASTM_FORMS = frozenset({"astm-q", "roche-tsreq", "erba-multi-tube", "vitros"})
ASTM_REPLIES = frozenset({"astm-orders", "roche-tsdwn"})
_ALL = "ALL"  # E1394 §12.1.3: every pending order, not a sample
_SENDER = "LISGW"
_O_FIELDS = 26  # O.26 report types is the last field written


@dataclass(frozen=True, slots=True)
class AskedSample:
    """One sample a Q record asks for, with the Q.3 repeat it came in (echoed by cobas)."""

    sample_id: str
    components: tuple[str, ...]


def asked_samples(message: AstmMessage, form: str | None) -> list[AskedSample]:
    """The samples the Q records of ``message`` ask for, one per repeat of Q.3 (Erba sends
    several tubes in one Q), in order. The ID is Q.3.3 for ``roche-tsreq``, else Q.3.2
    (§12.1.3: patient ID ^ specimen ID), else the first non-empty component; ``ALL`` and
    empty ones are left out."""
    asked: list[AskedSample] = []
    for record in message.of_type("Q"):
        for repeat in record.repeats(3):
            components = tuple(repeat)
            sample_id = _asked_id(components, form).strip()
            if sample_id and sample_id.upper() != _ALL:
                asked.append(AskedSample(sample_id, components))
    return asked


def is_query_abort(message: AstmMessage) -> bool:
    """Whether a Q record has request information status ``A`` (E1394 §12.1.13: "cancel
    request for the last request criteria sent", ``astm-q-abort``): nothing to answer."""
    return any(record.field_text(13).strip().upper() == "A" for record in message.of_type("Q"))


def _asked_id(components: tuple[str, ...], form: str | None) -> str:
    if form == "roche-tsreq":
        return components[2] if len(components) > 2 else ""
    if len(components) > 1 and components[1].strip():
        return components[1]
    return next((c for c in components if c.strip()), "")


def build_astm_orders(
    profile: CompiledProfile,
    samples: Sequence[SampleOrders],
    *,
    now_timestamp: str,
    query: AstmMessage | None = None,
    asked: Mapping[str, AskedSample] | None = None,
    encoding: str | None = None,
) -> list[bytes]:
    """The order message for ``samples``: a reply to ``query`` when given, else a download.

    ``now_timestamp`` is E1394 time (YYYYMMDDHHMMSS) for H.14; ``asked`` the Q.3 repeats by
    sample ID (``asked_samples``), echoed where the form wants it. ConfigError when the
    driver's reply form is not an ASTM one.
    """
    reply = profile.query.reply or "astm-orders"
    if reply not in ASTM_REPLIES:
        raise ConfigError([f"driver {profile.key}: query.reply {reply!r} is not an ASTM reply"])
    delimiters = query.delimiters if query is not None else DEFAULT_DELIMITERS
    encoding = encoding or profile.charset.encoding or "latin-1"
    roche = reply == "roche-tsdwn"
    records = [_header(query, roche, now_timestamp, delimiters)]
    asked = asked or {}
    for number, sample in enumerate(samples, 1):
        records.append(_patient(profile, number, sample, roche))
        records.append(_order(profile, number, sample, asked.get(sample.sample_id), roche))
    records.append(Record.of("L", "1", "N"))
    return [encode_record(record, delimiters, encoding) for record in records]


def _header(
    query: AstmMessage | None, roche: bool, now_timestamp: str, delimiters: Delimiters
) -> Record:
    analyzer: Value = ""
    if query is not None and query.header is not None:
        analyzer = query.header.component(5, 1)
    if roche:
        kind = ("TSDWN", "REPLY" if query is not None else "BATCH")
        sender: Value = ("host", "1")
        return Record.of("H", delimiters.definition, "", "", sender, "", "", "", "", analyzer,
                         kind, "P", "1")  # fmt: skip
    return Record.of("H", delimiters.definition, "", "", _SENDER, "", "", "", "", analyzer,
                     "", "P", "LIS2-A2", now_timestamp)  # fmt: skip


def _patient(profile: CompiledProfile, number: int, sample: SampleOrders, roche: bool) -> Record:
    if not sample.tests or (roche and not sample.patient_id):
        return Record.of("P", str(number))
    name = tuple(profile.outgoing_text(part) for part in sample.patient_name.split("^"))
    name_value: Value = name if any(name) else ""
    return Record.of("P", str(number), profile.outgoing_text(sample.patient_id), "", "",
                     name_value)  # fmt: skip


def _order(
    profile: CompiledProfile,
    number: int,
    sample: SampleOrders,
    asked: AskedSample | None,
    roche: bool,
) -> Record:
    fields: dict[int, Value] = {2: str(number)}
    _place(fields, _first_o(profile.orders.sample_id_fields, 3), sample.sample_id)
    if roche and asked is not None:
        fields[4] = asked.components[3:] if len(asked.components) > 3 else ""
    if sample.tests:
        template = profile.orders.test_id_template.split("^")
        fields[5] = [
            tuple(part.replace("{code}", test.code) for part in template) for test in sample.tests
        ]
        _place(fields, _first_o(profile.orders.priority_fields, 6), astm_priority(sample.priority))
        fields[12] = "A" if roche else "N"
        if roche:
            fields[16] = _roche_sample_type(asked)
        fields[26] = "O"
    else:
        fields[26] = "Y"
    return Record.of("O", *(fields.get(n, "") for n in range(2, _O_FIELDS + 1)))


def _first_o(specs: Sequence[RefSpec], default: int) -> RefSpec:
    for spec in specs:
        if spec.source == "O":
            return spec
    return RefSpec(f"O.{default}", "astm", "O", default)


def _place(fields: dict[int, Value], spec: RefSpec, value: str) -> None:
    """Put ``value`` where ``spec`` says: the whole field, or one component of it."""
    if spec.component <= 1:
        fields[spec.field] = value
        return
    components = [""] * spec.component
    components[spec.component - 1] = value
    fields[spec.field] = tuple(components)


def _roche_sample_type(asked: AskedSample | None) -> str:
    """The digit of the TSREQ's sample type (Q.3.8 ``S1`` → ``1``), serum (1) by default."""
    if asked is not None and len(asked.components) > 7:
        digits = "".join(c for c in asked.components[7] if c.isdigit())
        if digits:
            return digits
    return "1"
