"""Unit tests of lisgw.drivers.translit: patient names for ASCII and Latin-1 analyzers.

The names are invented; they stand for the Vietnamese, French, German, Polish and
Scandinavian names a laboratory sends to its analyzers.
"""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lisgw.drivers.translit import TARGETS, Target, fits, transliterate
from lisgw.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Nguyễn Thị Kim Tiến", "Nguyen Thi Kim Tien"),
        ("Đặng", "Dang"),
        ("Lê Văn Đức", "Le Van Duc"),
        ("Trương Ngọc Ánh", "Truong Ngoc Anh"),
        ("Müller", "Mueller"),
        ("Jürgen Größe", "Juergen Groesse"),
        ("Straße", "Strasse"),
        ("Françoise Cœur", "Francoise Coeur"),
        ("Noël Hélène", "Noel Helene"),
        ("Łukasz Wiśniewski", "Lukasz Wisniewski"),
        ("Øre", "Oere"),
        ("Æ", "AE"),
        ("Ærø", "Aeroe"),
        ("Ångström", "Angstroem"),
        ("Þórður", "Thordur"),
        ("Yıldız İnce", "Yildiz Ince"),
        ("O’Brien–Smith", "O'Brien-Smith"),
        ("Ｓａｔｏ", "Sato"),
        ("张伟", "??"),
    ],
)
def test_ascii_transliteration(text: str, expected: str) -> None:
    assert transliterate(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Nguyễn Thị Kim Tiến", "NGUYEN THI KIM TIEN"),
        ("Müller", "MUELLER"),
        ("Straße", "STRASSE"),
        ("Øre", "OERE"),
        ("Françoise Cœur", "FRANCOISE COEUR"),
    ],
)
def test_ascii_uppercase(text: str, expected: str) -> None:
    assert transliterate(text, uppercase=True) == expected


def test_digraph_of_a_capital_follows_its_neighbours_case() -> None:
    assert transliterate("MÜLLER") == "MUELLER"
    assert transliterate("Ülker") == "Uelker"
    assert transliterate("ÆBLE") == "AEBLE"
    assert transliterate("Æble") == "Aeble"
    assert transliterate("PAUL Ø") == "PAUL OE"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Müller", "Müller"),
        ("Straße", "Straße"),
        ("Hélène Øre Ærø", "Hélène Øre Ærø"),
        ("Nguyễn Thị Kim Tiến", "Nguyen Thi Kim Tien"),
        ("Lê Văn Đức", "Lê Van Duc"),
        ("Françoise Cœur", "Françoise Coeur"),
        ("Łukasz", "Lukasz"),
        ("Þórður", "Þórður"),
    ],
)
def test_latin1_keeps_what_latin1_encodes(text: str, expected: str) -> None:
    assert transliterate(text, "latin-1") == expected


def test_latin1_uppercase_keeps_letters_whose_capital_is_not_latin1() -> None:
    assert transliterate("Müller", "latin-1", uppercase=True) == "MÜLLER"
    assert transliterate("Straße", "latin-1", uppercase=True) == "STRASSE"
    # "ÿ".upper() is "Ÿ" (U+0178) and "µ".upper() is Greek "Μ": neither is Latin-1.
    assert transliterate("ÿ µ", "latin-1", uppercase=True) == "ÿ µ"


def test_decomposed_input_reads_as_composed() -> None:
    decomposed = unicodedata.normalize("NFD", "Müller Tiến")
    assert transliterate(decomposed) == "Mueller Tien"
    assert transliterate(decomposed, "latin-1") == "Müller Tien"


def test_invisible_format_characters_are_dropped_and_stray_marks_removed() -> None:
    assert transliterate("\ufeffAnna\u200dMaria") == "AnnaMaria"
    assert transliterate("q\u0301") == "q"


def test_lone_surrogates_become_question_marks() -> None:
    assert transliterate("a\ud800b") == "a?b"
    assert transliterate("a\ud800b", "latin-1", uppercase=True) == "A?B"


def test_ascii_text_is_unchanged() -> None:
    text = "SMITH^JOHN 12/3 (x)|&\\"
    assert transliterate(text) == text
    assert transliterate(text, "latin-1") == text


def test_unknown_target_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="utf-8"):
        transliterate("x", "utf-8")  # type: ignore[arg-type]


def test_fits() -> None:
    assert fits("Müller", "latin-1")
    assert not fits("Müller", "ascii")
    assert not fits("Nguyễn", "latin-1")
    assert fits("Nguyễn", "utf-8")
    assert fits("Łukasz", "cp1250")
    with pytest.raises(ConfigError, match="no-such-codec"):
        fits("x", "no-such-codec")


targets = st.sampled_from(TARGETS)


@settings(max_examples=300, deadline=None)
@given(text=st.text(), target=targets, uppercase=st.booleans())
def test_output_is_encodable_and_idempotent(text: str, target: Target, uppercase: bool) -> None:
    once = transliterate(text, target, uppercase)
    once.encode(target)
    assert fits(once, target)
    assert transliterate(once, target, uppercase) == once


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.characters(max_codepoint=0xFF)))
def test_latin1_text_is_unchanged_for_latin1(text: str) -> None:
    assert transliterate(text, "latin-1") == text


def test_every_european_latin_letter_has_an_ascii_spelling() -> None:
    # Latin-1 Supplement and Latin Extended-A: the letters of European names. Kra (ĸ) has no
    # spelling; ŉ is "ʼn" (the apostrophe is not ASCII); Ŀ is "L·" (Catalan), written "L.".
    letters = [chr(c) for c in range(0xC0, 0x180) if chr(c).isalpha()]
    spelled = {c: transliterate(c) for c in letters if c not in "ĸŉĿŀ"}
    assert {c: s for c, s in spelled.items() if not (s.isascii() and s.isalpha())} == {}
    assert transliterate("Ŀ") == "L."


@pytest.mark.parametrize(
    ("text", "expected"),
    [("Ɓello", "Bello"), ("Ɗanjuma", "Danjuma"), ("Ɔsei", "Osei"), ("Məmmədov", "Mammadov")],
)
def test_african_and_azerbaijani_letters(text: str, expected: str) -> None:
    assert transliterate(text) == expected
