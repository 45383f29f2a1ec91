"""Unit tests of lisgw.drivers.values: numbers and reference ranges as analyzers send them.

Each value quoted from the corpus names its capture; ``test_corpus_values`` reads them all.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lisgw.decode import decode_capture
from lisgw.drivers.values import parse_numeric, split_reference_range


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5.5", (5.5, "")),
        ("  5.5", (5.5, "")),  # Sysmex XP-100: values left-padded with spaces
        (" 170 ", (170.0, "")),
        ("-1", (-1.0, "")),  # cobas e411 COI pair `-1^0.282`, first component
        ("+2", (2.0, "")),
        (".5", (0.5, "")),
        ("5.", (5.0, "")),
        ("0.150", (0.15, "")),  # Mindray BC-5130
        ("1.2E3", (1200.0, "")),
        ("1.2e-3", (0.0012, "")),
        (">8", (8.0, ">")),  # EUROIMMUN Analyzer I
        ("<3.00", (3.0, "<")),  # cobas e411
        ("<=1.005", (1.005, "<=")),  # Siemens Clinitek Status, specific gravity
        (">=10", (10.0, ">=")),
        ("> 8", (8.0, ">")),
        ("≤5", (5.0, "<=")),
        ("≥5", (5.0, ">=")),
    ],
)
def test_numbers(value: str, expected: tuple[float, str]) -> None:
    assert parse_numeric(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "-----",  # Horiba Pentra XLR: not measured
        "Negative",  # Clinitek Status
        "POS",  # GeneXpert
        "NOT DETECTED",
        "",
        "   ",
        ">",
        "<=",
        ">Negative",
        "NaN",
        "nan",
        "inf",
        "-Infinity",
        "1e999",  # overflows to inf: never a number
        "7,41",  # decimal comma, but the profile did not say so
        "1,234",  # thousands separator: never guessed
        "1 234",
        "5 .5",
        "5.5 mg/dl",
        "0x10",
        "1_000",
        "٣",  # Arabic-Indic digit three: float() takes it, analyzers do not send it
        "５",  # full-width digit
        "-1^0.282",  # a composite value is not one number
        "PNG&R&20240628&R&2024_06_27_13_54_27_WDF.PNG",
    ],
)
def test_not_numbers(value: str) -> None:
    assert parse_numeric(value) == (None, "")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7,41", (7.41, "")),  # EUROIMMUN Analyzer I
        ("2,02", (2.02, "")),
        (">8", (8.0, ">")),
        ("<0,5", (0.5, "<")),
        ("-1,5", (-1.5, "")),
        ("12", (12.0, "")),
        ("1,2E3", (1200.0, "")),
    ],
)
def test_decimal_comma(value: str, expected: tuple[float, str]) -> None:
    assert parse_numeric(value, decimal_comma=True) == expected


@pytest.mark.parametrize("value", ["7.41", "1.234", "1.234,5", "1,2,3", "7,41,"])
def test_decimal_comma_does_not_guess_points(value: str) -> None:
    assert parse_numeric(value, decimal_comma=True) == (None, "")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4.00-10.00", (4.0, 10.0)),  # Mindray BC-5130 OBX-7
        ("0.108-0.282", (0.108, 0.282)),
        ("0.3 to 4.5", (0.3, 4.5)),  # Snibe MAGLUMI OBX-7
        ("0 to 17", (0.0, 17.0)),
        ("3.5 TO 5.0", (3.5, 5.0)),
        ("3.5 - 5.0", (3.5, 5.0)),
        ("3.5–5.0", (3.5, 5.0)),
        ("3.5..5.0", (3.5, 5.0)),
        ("-2.0--1.0", (-2.0, -1.0)),
        ("-2.0-1.0", (-2.0, 1.0)),
        ("1e-3-2e-3", (0.001, 0.002)),
        ("5-5", (5.0, 5.0)),
        ("<5", (None, 5.0)),
        ("<=5", (None, 5.0)),
        ("> 1.2", (1.2, None)),
        (">=1.2", (1.2, None)),
        ("4.00-10.00^NORMAL", (4.0, 10.0)),
        ("^DEFAULT", (None, None)),  # Erba EM-200 / XL-1000: a range name without limits
        ("DEFAULT", (None, None)),
        ("", (None, None)),
        ("5", (None, None)),
        ("10-4", (None, None)),  # reversed: not understood, so not used
        ("Negative", (None, None)),
        ("3,5-5,0", (None, None)),
        ("nan-inf", (None, None)),
        ("1-1e999", (None, None)),
    ],
)
def test_reference_ranges(text: str, expected: tuple[float | None, float | None]) -> None:
    assert split_reference_range(text) == expected


def test_reference_range_with_decimal_comma() -> None:
    assert split_reference_range("3,5-5,0", decimal_comma=True) == (3.5, 5.0)
    assert split_reference_range("0,3 to 4,5", decimal_comma=True) == (0.3, 4.5)
    assert split_reference_range("<0,5", decimal_comma=True) == (None, 0.5)
    assert split_reference_range("3.5-5.0", decimal_comma=True) == (None, None)


def test_corpus_values(corpus_dir: Path) -> None:
    """Every result value and range in the corpus reads as these counts say."""
    numbers = censored = texts = ranges = 0
    not_ranges: set[str] = set()
    for capture in sorted(corpus_dir.rglob("*.bin")):
        decimal_comma = "euroimmun" in capture.name
        for message in decode_capture(capture.read_bytes()):
            for result in (r for s in message.specimens for r in s.results):
                number, censor = parse_numeric(result.value, decimal_comma)
                assert number is None or math.isfinite(number)
                numbers += number is not None
                censored += censor != ""
                texts += number is None
                low, high = split_reference_range(result.reference_range)
                if low is not None or high is not None:
                    ranges += 1
                elif result.reference_range:
                    not_ranges.add(result.reference_range)
    # 9 `>8` (EUROIMMUN), `<3.00` (e411), `<=1.005` (Clinitek), 3 VITROS serum indices `<15`…
    assert censored == 14
    assert numbers > 300
    assert texts > 50  # `-----`, `Negative`, `POS`, IP messages, PNG file names …
    assert ranges == 100  # 75 Mindray `lower-upper`, 25 MAGLUMI `lower to upper`
    assert not_ranges == {"^DEFAULT"}  # Erba


values = st.one_of(
    st.text(),
    st.from_regex(
        r"\A\s*(<=|>=|<|>)?\s*[+-]?[0-9]{0,400}([.,][0-9]{0,5})?([eE][+-]?[0-9]{1,4})?\s*\Z"
    ),
)


@settings(max_examples=300, deadline=None)
@given(value=values, decimal_comma=st.booleans())
def test_parse_never_raises_and_is_finite(value: str, decimal_comma: bool) -> None:
    number, censor = parse_numeric(value, decimal_comma)
    assert number is None or math.isfinite(number)
    assert censor in ("", "<", ">", "<=", ">=")
    if number is None:
        assert censor == ""


@settings(max_examples=200, deadline=None)
@given(
    number=st.floats(allow_nan=False, allow_infinity=False), censor=st.sampled_from(["", "<", ">"])
)
def test_printed_floats_read_back(number: float, censor: str) -> None:
    assert parse_numeric(f"{censor}{number!r}") == (number, censor)
    assert parse_numeric(f"{censor}{number!r}".replace(".", ","), decimal_comma=True) == (
        number,
        censor,
    )


@settings(max_examples=300, deadline=None)
@given(text=values, decimal_comma=st.booleans())
def test_range_never_raises_and_is_ordered(text: str, decimal_comma: bool) -> None:
    low, high = split_reference_range(text, decimal_comma)
    for limit in (low, high):
        assert limit is None or math.isfinite(limit)
    if low is not None and high is not None:
        assert low <= high


@settings(max_examples=200, deadline=None)
@given(
    low=st.floats(-1e6, 1e6, allow_nan=False),
    high=st.floats(-1e6, 1e6, allow_nan=False),
    separator=st.sampled_from(["-", " - ", " to ", "–"]),
)
def test_printed_ranges_read_back(low: float, high: float, separator: str) -> None:
    low, high = min(low, high), max(low, high)
    assert split_reference_range(f"{low!r}{separator}{high!r}") == (low, high)
