"""Transliteration of text sent to analyzers that only take ASCII or Latin-1.

Layer: domain (pure, standard library only). The driver engine applies it to the text the
gateway writes to an analyzer (patient names in downloaded orders), as a profile's
``charset.transliterate`` / ``charset.uppercase`` keys ask.

The rules, in order, for each character of the NFC-normalized text:

1. A character the target encodes is kept (for Latin-1: é, ü, ß, ø, æ stay).
2. A character in ``_LETTERS`` is replaced by its entry: letters that Unicode does not
   decompose (Đ → D, Ł → L, Æ → AE, Œ → OE, Þ → TH, ı → i …), typographic quotes and dashes.
   For the ASCII target, Ä Ö Ü ä ö ü become AE OE UE ae oe ue and ß becomes ss: that is the
   German convention German laboratories expect ("Müller" → "Mueller", never "Muller"), and
   one of the two spellings ICAO Doc 9303 part 3 (machine-readable travel documents) allows
   for names. Ø becomes OE as ICAO 9303 writes it; Å simply loses its ring (ICAO allows "A").
3. Otherwise the character is decomposed (NFKD) and its combining marks are dropped:
   Vietnamese "Nguyễn Thị Kim Tiến" → "Nguyen Thi Kim Tien", "Ｆｕｌｌ" → "Full", "ﬁ" → "fi".
   What still does not fit is looked up in ``_LETTERS`` again; a Latin letter with a hook or
   stroke becomes its base letter, read from its Unicode name (Hausa "Ɓ" → "B", "ƙ" → "k");
   anything else becomes ``?``. Invisible format characters (zero-width joiner, byte-order
   mark) are dropped.

A replacement of more than one letter for a capital follows its neighbour's case:
"Øre" → "Oere", "ØRE" → "OERE", "Æ" alone → "AE". With ``uppercase`` each output character is
upper-cased when its upper case still fits the target (Latin-1 "ÿ" stays: "Ÿ" is not Latin-1).

The output is always encodable in the target; transliterating it again changes nothing.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final, Literal, get_args

from lisgw.errors import ConfigError

Target = Literal["ascii", "latin-1"]
TARGETS: Final[tuple[str, ...]] = get_args(Target)

# The first code point each target cannot encode.
_LIMITS: Final[dict[str, int]] = {"ascii": 0x80, "latin-1": 0x100}
_UNKNOWN: Final = "?"

# Upper-case forms are given; a capital's multi-letter replacement is title-cased when its
# neighbour is lower case (see _replace_letter). Only reached for characters the target
# cannot encode, so the Latin-1 letters here (Ä, ß, Ø, Æ, Þ, Ð) apply to ASCII alone.
_LETTERS: Final[dict[str, str]] = {
    # German convention (and ICAO 9303): umlauts become vowel + e.
    "Ä": "AE",
    "ä": "ae",
    "Ö": "OE",
    "ö": "oe",
    "Ü": "UE",
    "ü": "ue",
    "ß": "ss",
    "ẞ": "SS",
    # Letters without a Unicode decomposition.
    "Æ": "AE",
    "æ": "ae",
    "Œ": "OE",
    "œ": "oe",
    "Ø": "OE",
    "ø": "oe",
    "Đ": "D",  # Vietnamese, Croatian, Serbian
    "đ": "d",
    "Ð": "D",  # Icelandic eth
    "ð": "d",
    "Þ": "TH",
    "þ": "th",
    "Ł": "L",
    "ł": "l",
    "ı": "i",  # Turkish dotless i (İ decomposes to I + dot)
    "Ħ": "H",
    "ħ": "h",
    "Ŋ": "N",
    "ŋ": "n",
    "Ŧ": "T",
    "ŧ": "t",
    "Ɖ": "D",  # African D (Ewe); its small form ɖ is "d with tail"
    "Ə": "A",  # Azerbaijani schwa: "Məmmədov" → "Mammadov", as Azerbaijani passports write it
    "ə": "a",
    "Ǝ": "E",
    "ǝ": "e",
    "Ɛ": "E",  # open e and open o (Akan, Ewe)
    "ɛ": "e",
    "Ɔ": "O",
    "ɔ": "o",
    "·": ".",  # Catalan "l·l" (Ŀ decomposes to L + middle dot)
    # Typography pasted from word processors into patient records.
    "‘": "'",
    "’": "'",
    "‚": "'",
    "‛": "'",
    "′": "'",
    "“": '"',
    "”": '"',
    "„": '"',
    "″": '"',
    "‐": "-",
    "‑": "-",
    "‒": "-",
    "–": "-",
    "—": "-",
    "―": "-",
    "−": "-",
}
_MARKS: Final = frozenset({"Mn", "Mc", "Me"})
# Letters with a hook, stroke or bar that Unicode does not decompose (Hausa "Ɓ", "ƙ"; "Ƶ")
# are read from their Unicode name: "LATIN SMALL LETTER B WITH STROKE" → "b".
_LETTER_WITH: Final = re.compile(r"LATIN (CAPITAL|SMALL) LETTER ([A-Z]) WITH ")


def transliterate(text: str, target: Target = "ascii", uppercase: bool = False) -> str:
    """``text`` rewritten so that ``target`` ("ascii" or "latin-1") can encode it.

    "Nguyễn Thị Kim Tiến" → "Nguyen Thi Kim Tien" (``uppercase``: "NGUYEN THI KIM TIEN");
    "Müller" → "Mueller" in ASCII, "Müller" in Latin-1; "Françoise Cœur" → "Francoise Coeur".
    Never raises for any text; an unknown target is a ConfigError.
    """
    limit = _target_limit(target)
    text = unicodedata.normalize("NFC", text)
    out: list[str] = []
    for index, char in enumerate(text):
        if ord(char) < limit:
            out.append(char)
        elif char in _LETTERS:
            out.append(_replace_letter(text, index))
        else:
            out.append(_decompose(char, limit))
    result = "".join(out)
    if uppercase:
        result = "".join(_upper_if_fits(char, limit) for char in result)
    return result


def fits(text: str, encoding: str) -> bool:
    """True when ``encoding`` (any Python codec name) can encode ``text`` as it is."""
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return False
    except LookupError:
        raise ConfigError([f"unknown character encoding {encoding!r}"]) from None
    return True


def _target_limit(target: str) -> int:
    limit = _LIMITS.get(target)
    if limit is None:
        raise ConfigError(
            [f"unknown transliteration target {target!r} (expected one of {TARGETS})"]
        )
    return limit


def _replace_letter(text: str, index: int) -> str:
    char = text[index]
    replacement = _LETTERS[char]
    if len(replacement) > 1 and char.isupper() and _neighbour_is_lower(text, index):
        return replacement.capitalize()
    return replacement


def _neighbour_is_lower(text: str, index: int) -> bool:
    """Whether the next cased letter (else the previous one) beside ``index`` is lower case."""
    for neighbour in (index + 1, index - 1):
        if 0 <= neighbour < len(text):
            char = text[neighbour]
            if char.islower() or char.isupper():
                return char.islower()
    return False


def _decompose(char: str, limit: int) -> str:
    if unicodedata.category(char) == "Cf":
        return ""  # zero-width joiners, BOM, soft hyphen in ASCII: invisible anyway
    out: list[str] = []
    for part in unicodedata.normalize("NFKD", char):
        if unicodedata.category(part) in _MARKS:
            continue
        if ord(part) < limit:
            out.append(part)
        elif part in _LETTERS:
            out.append(_LETTERS[part])
        else:
            out.append(_base_letter(part))
    return "".join(out)


def _base_letter(char: str) -> str:
    match = _LETTER_WITH.match(unicodedata.name(char, ""))
    if match is None:
        return _UNKNOWN
    return match[2] if match[1] == "CAPITAL" else match[2].lower()


def _upper_if_fits(char: str, limit: int) -> str:
    upper = char.upper()
    if all(ord(part) < limit for part in upper):
        return upper
    return char
