"""Analyzer timestamps made zone-aware: E1394 and HL7 date/times to ISO 8601.

Layer: domain (pure; standard library ``datetime`` and ``zoneinfo``, no clock). The driver
engine applies it to a profile's ``completed_at`` field with the connection's ``tz``.

Accepted forms:

* E1394 §6.6.2: ``YYYYMMDD[HHMM[SS]]`` (cobas, Sysmex, Pentra);
* HL7 v2 chapter 2A, data types DTM and TS: ``YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]``.

Analyzers send local time without a zone. With a configured zone name (IANA, through
``zoneinfo``, which reads the system's zone database, /usr/share/zoneinfo; the ``tzdata``
package is only needed where there is none) the result carries that zone's offset at that
local time, DST included. Around a DST change a local time may name two instants or none;
they are resolved as PEP 495 does:

* a time that occurs twice (the hour repeated when DST ends) takes ``fold=0``, its first
  occurrence, i.e. the summer offset (Europe/Paris 2024-10-27 02:30 → ``+02:00``);
* a time that never occurs (the hour skipped when DST starts) is shifted forward by the
  gap: Europe/Paris 2024-03-31 02:30 → ``2024-03-31T03:30+02:00``, the instant a clock still
  on winter time would have meant.

An explicit HL7 offset wins over the configured zone. Without a zone the result is naive ISO.
The precision sent is kept ("YYYYMMDDHHMM" gives minutes); a date alone never carries an
offset (ISO 8601 has none for dates). All-zero timestamps (cobas ``00000000000000``),
impossible dates and junk are returned trimmed, as sent.
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Final

from lisgw.errors import ConfigError

_TIMESTAMP: Final = re.compile(
    r"(?P<y>[0-9]{4})(?:(?P<mo>[0-9]{2})(?:(?P<d>[0-9]{2})(?:(?P<h>[0-9]{2})"
    r"(?:(?P<mi>[0-9]{2})(?:(?P<s>[0-9]{2})(?:\.(?P<f>[0-9]{1,4}))?)?)?)?)?)?"
    r"(?P<z>[+-][0-9]{4})?",
    re.ASCII,
)
# The ISO separator written before each part, in order of precision.
_PARTS: Final = (("mo", "-"), ("d", "-"), ("h", "T"), ("mi", ":"), ("s", ":"))


def check_zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA zone ``name`` ("Asia/Ho_Chi_Minh"); ConfigError naming it if there is none."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(
            [
                f"unknown time zone {name!r} (expected an IANA name such as "
                f"'Europe/Paris'; the zone database is read from "
                f"{':'.join(zoneinfo.TZPATH) or 'the tzdata package'})"
            ]
        ) from None


def to_zoned_iso(text: str, tz: str | None) -> str:
    """An E1394 or HL7 timestamp as ISO 8601, with ``tz``'s offset when ``tz`` is given.

    "20240627135407", "Asia/Ho_Chi_Minh" → "2024-06-27T13:54:07+07:00";
    "20240627135407", None → "2024-06-27T13:54:07"; "202409241819+0200" → "2024-09-24T18:19+02:00"
    whatever ``tz``; "00000000000000" → "00000000000000". Raises ConfigError only for an
    unknown zone name.
    """
    zone = check_zone(tz) if tz is not None else None
    text = text.strip()
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        return text
    parts = match.groupdict()
    local = _local_datetime(parts)
    if local is None:
        return text
    explicit = _explicit_offset(parts["z"])
    if parts["z"] is not None and explicit is None:
        return text
    if parts["h"] is None:
        return _format(local, parts, offset=None)  # a date has no offset
    if explicit is not None:
        return _format(local, parts, offset=explicit)
    if zone is None:
        return _format(local, parts, offset=None)
    zoned = _resolve(local, zone)
    return _format(zoned, parts, offset=zoned.utcoffset())


def _local_datetime(parts: dict[str, str | None]) -> datetime | None:
    """The naive datetime the parts describe, missing parts at their minimum; None if invalid."""
    fraction = parts["f"]
    try:
        return datetime(
            int(parts["y"] or 0),
            int(parts["mo"] or 1),
            int(parts["d"] or 1),
            int(parts["h"] or 0),
            int(parts["mi"] or 0),
            int(parts["s"] or 0),
            int(fraction.ljust(6, "0")) if fraction else 0,
        )
    except ValueError:  # year 0000, month 13, 30 February, second 60 …
        return None


def _explicit_offset(zone: str | None) -> timedelta | None:
    if zone is None:
        return None
    hours, minutes = int(zone[1:3]), int(zone[3:5])
    if hours > 23 or minutes > 59:
        return None
    offset = timedelta(hours=hours, minutes=minutes)
    return -offset if zone[0] == "-" else offset


def _resolve(local: datetime, zone: tzinfo) -> datetime:
    """``local`` in ``zone``: fold=0 for a repeated time, shifted forward over a DST gap."""
    aware = local.replace(tzinfo=zone, fold=0)
    # PEP 495: a time in a gap with fold=0 takes the offset from before the transition;
    # the round trip through UTC gives the wall-clock time after it.
    try:
        return aware.astimezone(UTC).astimezone(zone)
    except OverflowError:  # year 1 or 9999 next to the end of datetime's range: no DST there
        return aware


def _format(moment: datetime, parts: dict[str, str | None], offset: timedelta | None) -> str:
    values = {
        "mo": f"{moment.month:02d}",
        "d": f"{moment.day:02d}",
        "h": f"{moment.hour:02d}",
        "mi": f"{moment.minute:02d}",
        "s": f"{moment.second:02d}",
    }
    iso = f"{moment.year:04d}"
    for key, separator in _PARTS:
        if parts[key] is None:
            break
        iso += separator + values[key]
    fraction = parts["f"]
    if fraction is not None and parts["s"] is not None:
        iso += "." + f"{moment.microsecond:06d}"[: len(fraction)]
    if offset is not None:
        iso += _format_offset(offset)
    return iso


def _format_offset(offset: timedelta) -> str:
    sign = "-" if offset < timedelta(0) else "+"
    seconds = abs(int(offset.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    # Local mean time has offsets in seconds (Asia/Ho_Chi_Minh in 1899: +07:06:30).
    tail = f":{seconds:02d}" if seconds else ""
    return f"{sign}{hours:02d}:{minutes:02d}{tail}"
