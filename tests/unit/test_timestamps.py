"""Unit tests of lisgw.drivers.timestamps: E1394 and HL7 timestamps made zone-aware.

Timestamps quoted from the corpus name their capture. The zone database is the system's
(/usr/share/zoneinfo); these tests fail, rather than skip, where it is missing.
"""

from __future__ import annotations

import re
import string
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lisgw.drivers.timestamps import check_zone, to_zoned_iso
from lisgw.errors import ConfigError

HCMC = "Asia/Ho_Chi_Minh"
PARIS = "Europe/Paris"
NEW_YORK = "America/New_York"


@pytest.mark.parametrize(
    ("text", "tz", "expected"),
    [
        # Sysmex XN-550 R.13 (E1394 YYYYMMDDHHMMSS).
        ("20240627135407", HCMC, "2024-06-27T13:54:07+07:00"),
        ("20240627135407", None, "2024-06-27T13:54:07"),
        ("20240627135407", PARIS, "2024-06-27T13:54:07+02:00"),
        ("20240627135407", "UTC", "2024-06-27T13:54:07+00:00"),
        ("20240115083000", PARIS, "2024-01-15T08:30:00+01:00"),
        ("20240115083000", NEW_YORK, "2024-01-15T08:30:00-05:00"),
        # Siemens Clinitek Status MSH-7: minutes only; the precision sent is kept.
        ("201812052238", PARIS, "2018-12-05T22:38+01:00"),
        ("201812052238", None, "2018-12-05T22:38"),
        # Snibe MAGLUMI OBX-14, with the spaces a fixed-width field may leave.
        (" 20240820113648 ", HCMC, "2024-08-20T11:36:48+07:00"),
        # A date alone carries no offset.
        ("20240627", HCMC, "2024-06-27"),
        ("20240627", None, "2024-06-27"),
        # HL7 reduced precision.
        ("2024", PARIS, "2024"),
        ("202406", PARIS, "2024-06"),
        ("2024062713", PARIS, "2024-06-27T13+02:00"),
        ("20240627135407.5", PARIS, "2024-06-27T13:54:07.5+02:00"),
        ("20240627135407.1234", None, "2024-06-27T13:54:07.1234"),
        # An explicit HL7 offset wins over the configured zone.
        ("202409241819+0200", HCMC, "2024-09-24T18:19+02:00"),
        ("20240924181947-0500", None, "2024-09-24T18:19:47-05:00"),
        ("20240924181947.25+0530", PARIS, "2024-09-24T18:19:47.25+05:30"),
        ("20240924+0200", PARIS, "2024-09-24"),
    ],
)
def test_timestamps(text: str, tz: str | None, expected: str) -> None:
    assert to_zoned_iso(text, tz) == expected


@pytest.mark.parametrize(
    "text",
    [
        "00000000000000",  # cobas c311 (H7600 capture): no completion time
        "00000000",
        "",
        "Unknown",
        "2024-06-27T13:54:07",
        "20241301",  # month 13
        "20240230",  # 30 February
        "20230229",  # not a leap year
        "20240627250000",  # hour 25
        "20240627136000",  # minute 60
        "20240627135460",  # second 60: datetime has no leap seconds
        "2024062713540",  # 13 digits
        "202406271354071",  # 15 digits
        "20240627135407.12345",  # HL7 allows four fraction digits
        "20240627135407+2500",  # offset hour 25
        "20240627135407+0260",
        "20240627135407Z",
        "２０２４０６２７",  # full-width digits
    ],
)
def test_junk_is_returned_trimmed_as_sent(text: str) -> None:
    assert to_zoned_iso(text, PARIS) == text
    assert to_zoned_iso(f"  {text}\t", None) == text


def test_repeated_hour_takes_its_first_occurrence() -> None:
    # Europe/Paris falls back from 03:00 CEST to 02:00 CET on 2024-10-27: 02:30 happens twice.
    assert to_zoned_iso("20241027023000", PARIS) == "2024-10-27T02:30:00+02:00"
    assert to_zoned_iso("20241027033000", PARIS) == "2024-10-27T03:30:00+01:00"
    assert to_zoned_iso("20241103013000", NEW_YORK) == "2024-11-03T01:30:00-04:00"


def test_skipped_hour_is_shifted_forward() -> None:
    # Europe/Paris springs from 02:00 CET to 03:00 CEST on 2024-03-31: 02:30 never happens.
    assert to_zoned_iso("20240331023000", PARIS) == "2024-03-31T03:30:00+02:00"
    assert to_zoned_iso("202403310230", PARIS) == "2024-03-31T03:30+02:00"
    assert to_zoned_iso("20240310020000", NEW_YORK) == "2024-03-10T03:00:00-04:00"
    assert to_zoned_iso("20240331015959", PARIS) == "2024-03-31T01:59:59+01:00"
    assert to_zoned_iso("20240331030000", PARIS) == "2024-03-31T03:00:00+02:00"


def test_vietnam_has_no_dst() -> None:
    for month in range(1, 13):
        assert to_zoned_iso(f"2024{month:02d}15120000", HCMC).endswith("+07:00")


def test_ends_of_the_datetime_range() -> None:
    assert to_zoned_iso("99991231233000", NEW_YORK) == "9999-12-31T23:30:00-05:00"
    assert to_zoned_iso("00010101000000", "Asia/Tokyo").startswith("0001-01-01T00:00:00+09:")


def test_unknown_zone_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="Asia/Saigonn"):
        to_zoned_iso("20240627135407", "Asia/Saigonn")
    with pytest.raises(ConfigError, match="Asia/Saigonn"):
        to_zoned_iso("junk", "Asia/Saigonn")  # the zone is checked whatever the text


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Mars/Olympus_Mons",
        "europe/paris",
        "Europe",
        "../etc/passwd",
        "/etc/localtime",
        "zone.tab",
        "Europe/Paris ",
        "+07:00",
    ],
)
def test_check_zone_rejects(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_zone(name)
    assert repr(name) in str(caught.value)
    assert len(caught.value.problems) == 1


@pytest.mark.parametrize("name", [HCMC, PARIS, NEW_YORK, "UTC", "Asia/Saigon"])
def test_check_zone_accepts(name: str) -> None:
    assert check_zone(name) == ZoneInfo(name)


zones = st.sampled_from([HCMC, PARIS, NEW_YORK, "Australia/Lord_Howe", "UTC"])
# Seconds precision, years where the zone rules are modern; gaps and folds included.
moments = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2060, 1, 1)).map(
    lambda d: d.replace(microsecond=0)
)


@settings(max_examples=300, deadline=None)
@given(moment=moments, tz=zones)
def test_zoned_result_is_the_fold0_instant(moment: datetime, tz: str) -> None:
    out = datetime.fromisoformat(to_zoned_iso(moment.strftime("%Y%m%d%H%M%S"), tz))
    aware = moment.replace(tzinfo=ZoneInfo(tz), fold=0)
    assert out.timestamp() == aware.timestamp()
    if out.replace(tzinfo=None) != moment:  # only over a DST gap, and only forward
        assert timedelta(0) < out.replace(tzinfo=None) - moment <= timedelta(hours=1)


@settings(max_examples=200, deadline=None)
@given(moment=moments)
def test_naive_result_is_the_local_time(moment: datetime) -> None:
    out = to_zoned_iso(moment.strftime("%Y%m%d%H%M%S"), None)
    assert datetime.fromisoformat(out) == moment


@settings(max_examples=300, deadline=None)
@given(
    text=st.one_of(st.text(), st.text(alphabet=string.digits + "+-. ", max_size=24)),
    tz=st.one_of(st.none(), zones),
)
def test_never_raises_and_gives_iso_or_the_text(text: str, tz: str | None) -> None:
    out = to_zoned_iso(text, tz)
    if out == text.strip() or "T" not in out:
        return  # junk as sent, or a date (which never carries an offset)
    parsed = datetime.fromisoformat(out)
    explicit = re.search(r"[+-][0-9]{4}$", text.strip()) is not None
    assert (parsed.tzinfo is not None) == (tz is not None or explicit)
