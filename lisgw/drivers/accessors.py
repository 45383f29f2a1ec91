"""Compiled field accessors: what a field reference reads on a decoded record or segment.

Layer: drivers (domain, pure). ``lisgw.drivers.compiled`` builds these from the ``RefSpec``
objects of ``lisgw.drivers.references``; the engine calls them while it normalizes a message,
without ever looking at YAML or at a dict.

A field reference becomes an ``AstmRef`` (E1394 numbering, on ``lisgw.astm.records.Record``)
or an ``Hl7Ref`` (HL7 numbering, on ``lisgw.hl7.message.Segment``); a list of references
becomes a ``RefChain`` whose value is the first non-empty one. A chain reads from a *context*:
the latest record (segment) of each type seen so far in the message, so that a sample ID may
come from ``P.4`` while the engine stands on an O record (EUROIMMUN), or from ``PID-3.1`` while
it stands on an OBR (CLINITEK Status).

Reference semantics (drivers/README.md): ``R.5`` is the whole field with escapes decoded and
its delimiters put back, every repeat included; ``R.5.2`` is component 2 of the first repeat;
``R.3.4+`` the first non-empty component from the 4th on; ``OBX-3.1`` a whole HL7 component
(subcomponents kept: GeneXpert's ``CTNG&CT``); ``SPM-2.1.1`` one subcomponent. Every value is
trimmed. A value key (``value.field``) applies the composite rule of
``composite_value`` to a whole-field reference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Generic, TypeVar

from lisgw.astm.records import Record
from lisgw.drivers.references import RefSpec
from lisgw.hl7.message import Segment

__all__ = ["AstmRef", "FieldRef", "Hl7Ref", "RefChain", "composite_value"]

T = TypeVar("T")


def composite_value(components: Sequence[str], separator: str = "^") -> str:
    """A value as sent, trimmed, by one presentation rule for composite values.

    Trailing empty components are dropped; a value with one non-empty component is that
    component alone (GeneXpert `^0.0` → `0.0`, MAGLUMI `1.08^` → `1.08`); otherwise the
    components are re-joined (`-1^0.282`, Bio-Rad `A^NEG^NEG^ccee^K-^NEG`).
    """
    parts = [c.strip() for c in components]
    while parts and not parts[-1]:
        parts.pop()
    nonempty = [p for p in parts if p]
    if len(nonempty) == 1:
        return nonempty[0]
    return separator.join(parts)


def _first_nonempty(parts: Sequence[str]) -> str:
    for part in parts:
        part = part.strip()
        if part:
            return part
    return ""


class FieldRef(Generic[T]):
    """One compiled reference; ``source`` is the record type or segment name it reads."""

    __slots__ = ("component", "field", "first_from", "source", "subcomponent", "text")

    def __init__(self, spec: RefSpec) -> None:
        self.text = spec.text
        self.source = spec.source
        self.field = spec.field
        self.component = spec.component
        self.subcomponent = spec.subcomponent
        self.first_from = spec.first_from

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.text!r})"

    def get(self, item: T) -> str:
        """The value in the first repeat (whole field: every repeat), trimmed."""
        raise NotImplementedError

    def get_repeat(self, item: T, repeat: int) -> str:
        """The value in repeat ``repeat`` (1-based), trimmed."""
        raise NotImplementedError

    def repeat_count(self, item: T) -> int:
        raise NotImplementedError

    def composite(self, item: T) -> str:
        """A result value: the composite rule on a whole field, else ``get``."""
        raise NotImplementedError


class AstmRef(FieldRef[Record]):
    """An E1394 reference (``R.4``, ``O.3.2``, ``R.3.4+``) on a decoded record."""

    __slots__ = ()

    def get(self, item: Record) -> str:
        if not self.component:
            repeats = item.repeats(self.field)
            if len(repeats) == 1 and len(repeats[0]) == 1:
                return repeats[0][0].strip()  # the common case: a plain value
            return item.field_text(self.field).strip()
        if not self.first_from:
            return item.component(self.field, self.component).strip()
        repeats = item.repeats(self.field)
        return _first_nonempty(repeats[0][self.component - 1 :]) if repeats else ""

    def get_repeat(self, item: Record, repeat: int) -> str:
        repeats = item.repeats(self.field)
        if repeat > len(repeats):
            return ""
        components = repeats[repeat - 1]
        if not self.component:
            delimiters = item.delimiters
            joiner = delimiters.component if delimiters is not None else "^"
            return joiner.join(components).strip()
        if self.first_from:
            return _first_nonempty(components[self.component - 1 :])
        return components[self.component - 1].strip() if self.component <= len(components) else ""

    def repeat_count(self, item: Record) -> int:
        return len(item.repeats(self.field))

    def composite(self, item: Record) -> str:
        if self.component:
            return self.get(item)
        repeats = item.repeats(self.field)
        return composite_value(repeats[0]) if repeats else ""


class Hl7Ref(FieldRef[Segment]):
    """An HL7 reference (``OBX-5``, ``OBX-3.1``, ``SPM-2.1.1``, ``OBX-3.4+``) on a segment."""

    __slots__ = ()

    def get(self, item: Segment) -> str:
        return self.get_repeat(item, 0)

    def get_repeat(self, item: Segment, repeat: int) -> str:
        # repeat 0: the whole field means every repeat; a component means the first repeat.
        if not self.component:
            return self._whole(item, repeat)
        if self.subcomponent:
            return item.get(self.field, self.component, repeat or 1, self.subcomponent).strip()
        components = item.components(self.field, repeat or 1)
        if self.first_from:
            return _first_nonempty(components[self.component - 1 :])
        return components[self.component - 1].strip() if self.component <= len(components) else ""

    def _whole(self, item: Segment, repeat: int) -> str:
        raw = item.field(self.field)
        enc = item.encoding_chars
        if not (
            enc.component in raw or enc.repetition in raw or (enc.escape and enc.escape in raw)
        ):
            return raw.strip() if repeat <= 1 else ""
        count = len(item.repeats(self.field))
        wanted = range(1, count + 1) if repeat == 0 else range(repeat, min(repeat, count) + 1)
        return enc.repetition.join(
            enc.component.join(item.components(self.field, index)) for index in wanted
        ).strip()

    def repeat_count(self, item: Segment) -> int:
        return len(item.repeats(self.field))

    def composite(self, item: Segment) -> str:
        if self.component:
            return self.get(item)
        return composite_value(item.components(self.field))


class RefChain(Generic[T]):
    """References tried in order; the first non-empty value wins. Empty chain: always ''."""

    __slots__ = ("refs",)

    def __init__(self, refs: Sequence[FieldRef[T]]) -> None:
        self.refs = tuple(refs)

    def __bool__(self) -> bool:
        return bool(self.refs)

    def __repr__(self) -> str:
        return f"RefChain({[ref.text for ref in self.refs]})"

    def get(self, context: Mapping[str, T]) -> str:
        if len(self.refs) == 1:  # the common case, without the loop
            ref = self.refs[0]
            item = context.get(ref.source)
            return ref.get(item) if item is not None else ""
        for ref in self.refs:
            item = context.get(ref.source)
            if item is not None:
                value = ref.get(item)
                if value:
                    return value
        return ""

    def composite(self, context: Mapping[str, T]) -> str:
        for ref in self.refs:
            item = context.get(ref.source)
            if item is not None:
                value = ref.composite(item)
                if value:
                    return value
        return ""

    def each(self, context: Mapping[str, T]) -> list[str]:
        """One value per repeat ("each repeat of the field is one ID"), empty ones skipped."""
        present = [
            (ref, item) for ref in self.refs if (item := context.get(ref.source)) is not None
        ]
        count = max((ref.repeat_count(item) for ref, item in present), default=0)
        values: list[str] = []
        for repeat in range(1, count + 1):
            for ref, item in present:
                value = ref.get_repeat(item, repeat)
                if value:
                    values.append(value)
                    break
        return values
