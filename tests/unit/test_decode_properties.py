"""Properties of the capture decoder: it never crashes, and sessions compose.

Any byte string decodes to messages (possibly kind "unknown") without an exception; mutated
corpus captures likewise; two complete ENQ…EOT captures back to back decode to the messages
of each, in order (coalesced sessions).
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lisgw.decode import decode_capture
from lisgw.model import NormalizedMessage
from tests.conftest import CORPUS_DIR, corpus_manifest

ALL = [(CORPUS_DIR / e["path"]).read_bytes() for e in corpus_manifest()]
SESSIONS = [d for d in ALL if d.lstrip(b"\x04\x06").startswith(b"\x05") and d.endswith(b"\x04")]

CONTROL = st.sampled_from(
    [
        b"\x02",
        b"\x03",
        b"\x04",
        b"\x05",
        b"\x06",
        b"\x0b",
        b"\x15",
        b"\x17",
        b"\x1c",
        b"\r",
        b"\n",
        b"|",
        b"^",
        b"H|\\^&",
        b"MSH|^~\\&",
    ]
)


def without_offsets(messages: list[NormalizedMessage]) -> list[NormalizedMessage]:
    return [replace(m, offset=0) for m in messages]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=40), CONTROL), max_size=40).map(b"".join))
def test_any_bytes_decode_without_exception(data: bytes) -> None:
    messages = decode_capture(data)
    assert messages, "every capture gives at least one line"
    for message in messages:
        for specimen in message.specimens:
            if message.incomplete:
                assert str(message.kind) == "unknown"
            assert isinstance(specimen.sample_id, str)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(ALL),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8),
    st.integers(0, 10_000),
)
def test_mutated_corpus_decodes_without_exception(
    data: bytes, flips: list[tuple[int, int]], cut: int
) -> None:
    mutated = bytearray(data)
    for position, value in flips:
        mutated[position % len(mutated)] = value
    del mutated[cut % (len(mutated) + 1) :]
    decode_capture(bytes(mutated))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(SESSIONS), min_size=2, max_size=4))
def test_coalesced_sessions_decode_to_each_session_in_turn(captures: list[bytes]) -> None:
    alone = [m for capture in captures for m in without_offsets(decode_capture(capture))]
    together = without_offsets(decode_capture(b"".join(captures)))
    assert [m.specimens for m in together] == [m.specimens for m in alone]
    assert [m.kind for m in together] == [m.kind for m in alone]


def test_there_are_session_captures_to_coalesce() -> None:
    assert len(SESSIONS) >= 5
