"""The driver engine: decoded ASTM messages and HL7 messages → ``lisgw.model``, by a profile.

Layer: drivers (domain, pure). Takes an ``AstmMessage`` (``lisgw.astm.message``) or an
``Hl7Message`` (``lisgw.hl7.message``) and a ``CompiledProfile``; returns a
``NormalizedMessage``. No YAML, no dict lookups by key name, no regex compilation happens
here: a message costs one pass over its records with the profile's precompiled accessors.

What is fixed by the standards (the profile only says *where* values are):

* E1394 message structure (§5, §7–§12): an O record opens a specimen; each R record belongs to
  the O it follows, across C and M records and several O per P; a C record comments on the
  record before it (an R: that result; an O: that specimen; an H or P: every specimen of that
  patient); Q records make a host query; a message with R records is results, else with Q a
  query, else with O an order message.
* HL7 grouping (chapter 7): several SPM (OUL^R22 batches): each SPM opens a specimen; one SPM
  (GeneXpert ORU^R30 sends it after the OBX; MAGLUMI before several OBR/OBX pairs): every OBX
  is that specimen's; no SPM (ORU^R01): an OBR naming a new sample ID opens a specimen. An
  NTE comments on the OBX before it, else on the specimen.

References are read in a context: the latest record or segment of each type so far (for a
specimen's sample ID in HL7, also the first of each type anywhere in the message, because
GeneXpert sends its SPM last).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, TypeVar

from lisgw.astm.message import AstmMessage
from lisgw.astm.records import Record
from lisgw.drivers.compiled import CompiledProfile, FieldRules
from lisgw.drivers.timestamps import to_zoned_iso
from lisgw.drivers.values import parse_numeric
from lisgw.errors import ConfigError
from lisgw.hl7.message import Hl7Message, Segment
from lisgw.model import Instrument, Kind, NormalizedMessage, Protocol, Query, Result, Specimen

__all__ = ["normalize", "normalize_astm", "normalize_hl7", "not_mine_message"]

T = TypeVar("T")

# E1394 §12.1.3: "ALL" in the starting range asks for every pending order, not a sample.
_ALL = "ALL"


def normalize(
    message: AstmMessage | Hl7Message,
    profile: CompiledProfile,
    *,
    offset: int = 0,
    tz: str | None = None,
) -> NormalizedMessage:
    """One decoded message → a NormalizedMessage, read with ``profile``.

    ``tz`` is the connection's IANA zone: result times are given its offset. ``offset`` is
    where the message began in the stream.
    """
    if isinstance(message, Hl7Message):
        return normalize_hl7(message, profile, offset=offset, tz=tz)
    return normalize_astm(message, profile, offset=offset, tz=tz)


def not_mine_message(
    data: bytes, profile: CompiledProfile, *, offset: int = 0
) -> NormalizedMessage:
    """Bytes a not-mine driver recognised: kept raw, never results."""
    return NormalizedMessage(
        protocol=Protocol.UNKNOWN,
        kind=Kind.UNKNOWN,
        driver=profile.key,
        raw=data,
        offset=offset,
        warnings=(
            f"{len(data)} byte(s) at offset {offset} recognised by driver {profile.key} "
            f"({profile.title or profile.name}): not ASTM or HL7, kept raw, never read as results",
        ),
    )


def _rules(profile: CompiledProfile, protocol: str) -> FieldRules[Any]:
    rules = profile.astm if protocol == "astm" else profile.hl7
    if rules is None:
        raise ConfigError(
            [f"driver {profile.key} is for {profile.protocol}: it cannot read {protocol}"]
        )
    return rules


# Shared pieces ---------------------------------------------------------------------------------


class _Draft:
    """A specimen being read: results and comments collected until the message ends."""

    __slots__ = ("comments", "qc", "result_comments", "results", "sample_id", "tests")

    def __init__(self, sample_id: str, qc: bool, tests: tuple[str, ...], comments: list[str]):
        self.sample_id = sample_id
        self.qc = qc
        self.tests = tests
        self.comments = list(comments)
        self.results: list[Result] = []
        self.result_comments: dict[int, list[str]] = {}

    def comment(self, text: str, on_result: bool) -> None:
        if on_result and self.results:
            self.result_comments.setdefault(len(self.results) - 1, []).append(text)
        else:
            self.comments.append(text)

    def build(self, rules: FieldRules[Any], with_tests: bool) -> Specimen:
        results = self.results
        if self.result_comments:
            results = [
                replace(r, comments=tuple(self.result_comments[i]))
                if i in self.result_comments
                else r
                for i, r in enumerate(results)
            ]
        qc = self.qc
        if not qc and rules.qc_comment_patterns:
            texts = [*self.comments, *(c for cs in self.result_comments.values() for c in cs)]
            qc = any(p.search(t) for p in rules.qc_comment_patterns for t in texts)
        return Specimen(
            sample_id=self.sample_id,
            qc=qc,
            results=tuple(results),
            tests=self.tests if with_tests else (),
            comments=tuple(self.comments),
        )


def _sample_id(rules: FieldRules[T], context: Mapping[str, T], warnings: list[str]) -> str:
    sample_id = rules.sample_id.get(context)
    if rules.sample_id_strip is not None:
        sample_id = sample_id.strip(rules.sample_id_strip)
    pattern = rules.sample_id_pattern
    if pattern is not None and sample_id:
        match = pattern.search(sample_id)
        if match is None:
            warnings.append(f"sample ID {sample_id!r} does not match the driver's pattern")
        else:
            sample_id = (match.group(1) or "").strip()
    return sample_id


def _qc(rules: FieldRules[T], context: Mapping[str, T], sample_id: str) -> bool:
    if rules.qc_action and rules.qc_action.get(context).upper() in rules.qc_action_codes:
        return True
    return any(p.search(sample_id) for p in rules.qc_id_patterns)


def _meanings(flags: str, table: Mapping[str, str], separators: tuple[str, str]) -> tuple[str, ...]:
    if not flags or not table:
        return ()
    whole = table.get(flags)
    if whole is not None:
        return (whole,)
    component, repeat = separators
    parts = flags.replace(repeat, component).split(component) if component else [flags]
    return tuple(table[p.strip()] for p in parts if p.strip() in table)


class _Reading:
    """What stays the same for every result of one message."""

    __slots__ = ("separators", "tests", "times", "tz")

    def __init__(self, profile: CompiledProfile, tz: str | None, separators: tuple[str, str]):
        self.tests = profile.tests
        self.tz = tz
        self.separators = separators
        self.times: dict[str, str] = {}  # results of one message mostly share their time

    def time(self, text: str) -> str:
        if not text:
            return ""
        zoned = self.times.get(text)
        if zoned is None:
            zoned = self.times[text] = to_zoned_iso(text, self.tz)
        return zoned


def _comment(rules: FieldRules[T], context: Mapping[str, T], separators: tuple[str, str]) -> str:
    """Comment text: its non-empty components, joined by spaces (blank comments are none).

    Stago `36^Test Co 24 controls are invalid.` → `36 Test Co 24 controls are invalid.`;
    cobas c311 sends blank space-padded comments (`   ^   ^   `), which carry nothing.
    """
    text = rules.comment.get(context)
    component, repeat = separators
    if not text or (component not in text and repeat not in text):
        return text
    parts = text.replace(repeat, component).split(component)
    return " ".join(part.strip() for part in parts if part.strip())


def _result(rules: FieldRules[T], context: Mapping[str, T], reading: _Reading) -> Result:
    code = rules.test_code.get(context)
    value = rules.value.composite(context)
    numeric, censor = parse_numeric(value, rules.decimal_comma) if value else (None, "")
    flags = rules.flags.get(context)
    status = rules.status.get(context)
    return Result(
        test=code,
        value=value,
        test_name=rules.test_name.get(context) or reading.tests.get(code, ""),
        units=rules.units.get(context),
        reference_range=rules.reference_range.get(context),
        flags=flags,
        status=status,
        completed_at=reading.time(rules.completed_at.get(context)),
        numeric=numeric,
        censor=censor,
        flag_meanings=_meanings(flags, rules.flag_map, reading.separators),
        status_meaning=rules.status_map.get(status, ""),
    )


def _instrument(rules: FieldRules[T], context: Mapping[str, T]) -> Instrument | None:
    name = rules.instrument_name.get(context)
    serial = rules.instrument_serial.get(context)
    software = rules.instrument_software.get(context)
    if not (name or serial or software):
        return None
    return Instrument(name=name, serial=serial, software=software)


def _kind(has_results: bool, has_query: bool, has_orders: bool) -> Kind:
    if has_results:
        return Kind.RESULTS
    if has_query:
        return Kind.QUERY
    if has_orders:
        return Kind.ORDERS
    return Kind.UNKNOWN


# ASTM --------------------------------------------------------------------------------------------


def normalize_astm(
    message: AstmMessage, profile: CompiledProfile, *, offset: int = 0, tz: str | None = None
) -> NormalizedMessage:
    """One E1394 message (H … L) → a NormalizedMessage (see the module docstring)."""
    rules: FieldRules[Record] = _rules(profile, "astm")
    warnings = list(message.warnings)
    reading = _Reading(profile, tz, (message.delimiters.component, message.delimiters.repeat))
    context: dict[str, Record] = {}
    drafts: list[_Draft] = []
    patient_comments: list[str] = []
    target = "patient"  # what a C record comments on: the patient, a specimen or a result
    query_ids: list[str] = []
    has_query = has_results = False
    for record in message.records:
        record_type = record.type
        context[record_type] = record
        if record_type == "R":
            has_results = True
            if not drafts:
                warnings.append("R record before any O record: sample ID unknown")
                drafts.append(_Draft("", False, (), patient_comments))
            drafts[-1].results.append(_result(rules, context, reading))
            target = "result"
        elif record_type == "O":
            sample_id = _sample_id(rules, context, warnings)
            tests = tuple(rules.order_tests.each(context))
            qc = _qc(rules, context, sample_id)
            drafts.append(_Draft(sample_id, qc, tests, patient_comments))
            target = "specimen"
        elif record_type == "C":
            text = _comment(rules, context, reading.separators)
            if text and target == "patient":
                patient_comments.append(text)
            elif text:
                drafts[-1].comment(text, target == "result")
        elif record_type in ("P", "H"):
            patient_comments = []
            target = "patient"
        elif record_type == "Q":
            has_query = True
            query_ids.extend(i for i in rules.query_ids.each(context) if i.upper() != _ALL)
    if not message.terminated:
        warnings.append("message has no L (terminator) record")
    kind = _kind(has_results, has_query, bool(drafts))
    header = message.header
    return NormalizedMessage(
        protocol=Protocol.ASTM,
        kind=kind,
        sender=header.component(5).strip() if header is not None else "",
        specimens=tuple(d.build(rules, kind is Kind.ORDERS) for d in drafts),
        query=Query(sample_ids=tuple(query_ids)) if has_query else None,
        warnings=tuple(warnings),
        offset=offset,
        driver=profile.key,
        instrument=_instrument(rules, {"H": header}) if header is not None else None,
    )


# HL7 ---------------------------------------------------------------------------------------------


def normalize_hl7(
    message: Hl7Message, profile: CompiledProfile, *, offset: int = 0, tz: str | None = None
) -> NormalizedMessage:
    """One HL7 v2 message → a NormalizedMessage (see the module docstring)."""
    rules: FieldRules[Segment] = _rules(profile, "hl7")
    msh = message.msh
    kind = profile.hl7_kinds.get(message.message_code, Kind.UNKNOWN)
    first: dict[str, Segment] = {}
    for segment in message:
        first.setdefault(segment.name, segment)
    out = NormalizedMessage(
        protocol=Protocol.HL7,
        kind=kind,
        sender=msh.get(3).strip(),
        offset=offset,
        driver=profile.key,
        instrument=_instrument(rules, first),
    )
    warnings: list[str] = []
    if kind is Kind.RESULTS:
        qc = msh.get(11).strip().upper() in rules.qc_processing_ids
        specimens = _hl7_specimens(message, profile, rules, first, tz, warnings)
        if qc:
            specimens = [replace(s, qc=True) for s in specimens]
        return replace(out, specimens=tuple(specimens), warnings=tuple(warnings))
    if kind is Kind.QUERY:
        ids = tuple(i for i in rules.query_ids.each(first) if i.upper() != _ALL)
        return replace(out, query=Query(sample_ids=ids, query_tag=rules.query_tag.get(first)))
    if kind is Kind.QUERY_CANCEL:
        return replace(out, query=Query(query_tag=rules.query_tag.get(first)))
    if kind is Kind.ORDERS:
        specimens = _hl7_orders(message, rules, first, warnings)
        return replace(out, specimens=tuple(specimens), warnings=tuple(warnings))
    return replace(
        out, warnings=(f"message type {message.message_type or '(none)'} is not handled",)
    )


def _hl7_specimens(
    message: Hl7Message,
    profile: CompiledProfile,
    rules: FieldRules[Segment],
    first: dict[str, Segment],
    tz: str | None,
    warnings: list[str],
) -> list[Specimen]:
    spm_count = len(message.segments("SPM"))
    opener = "SPM" if spm_count > 1 else ("" if spm_count else "OBR")
    enc = message.encoding_chars
    reading = _Reading(profile, tz, (enc.component, enc.repetition))
    context: dict[str, Segment] = {}
    drafts: list[_Draft] = []
    pending: list[str] = []  # NTE before any specimen
    on_result = False
    for segment in message:
        name = segment.name
        context[name] = segment
        if name == "OBX":
            if not drafts:
                drafts.append(_hl7_draft(rules, {**first, **context}, pending, warnings))
            drafts[-1].results.append(_result(rules, context, reading))
            on_result = True
        elif name == opener:
            sample_id = _sample_id(rules, {**first, **context}, [])
            if not drafts or name == "SPM" or (sample_id and sample_id != drafts[-1].sample_id):
                drafts.append(_hl7_draft(rules, {**first, **context}, pending, warnings))
            on_result = False
        elif name == "NTE":
            text = _comment(rules, context, reading.separators)
            if text:
                if drafts:
                    drafts[-1].comment(text, on_result)
                else:
                    pending.append(text)
    return [d.build(rules, False) for d in drafts]


def _hl7_draft(
    rules: FieldRules[Segment],
    context: Mapping[str, Segment],
    pending: list[str],
    warnings: list[str],
) -> _Draft:
    sample_id = _sample_id(rules, context, warnings)
    return _Draft(sample_id, _qc(rules, context, sample_id), (), pending)


def _hl7_orders(
    message: Hl7Message,
    rules: FieldRules[Segment],
    first: dict[str, Segment],
    warnings: list[str],
) -> list[Specimen]:
    context: dict[str, Segment] = {}
    specimens: list[Specimen] = []
    for segment in message:
        context[segment.name] = segment
        if segment.name == "OBR":
            draft = _hl7_draft(rules, {**first, **context}, [], warnings)
            draft.tests = tuple(rules.order_tests.each(context))
            specimens.append(draft.build(rules, True))
    return specimens
