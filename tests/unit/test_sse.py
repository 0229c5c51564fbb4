"""Tests for the incremental SSE decoder."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from routemesh.executor.sse import SSEDecoder, SSEEvent, aiter_sse


def decode_all(*chunks: bytes | str) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events + decoder.close()


def test_single_event_and_default_type():
    assert decode_all(b"data: hello\n\n") == [SSEEvent("message", "hello")]


def test_multi_line_data_joined_with_newlines():
    assert decode_all("data: one\ndata: two\ndata:\n\n") == [SSEEvent("message", "one\ntwo\n")]


def test_event_field_names_the_event_and_resets_after_dispatch():
    events = decode_all("event: usage\ndata: {}\n\ndata: next\n\n")
    assert events == [SSEEvent("usage", "{}"), SSEEvent("message", "next")]


def test_comments_and_unknown_fields_are_ignored():
    assert decode_all(": keep-alive\nfoo: bar\ndata: x\n\n: another\n\n") == [SSEEvent("message", "x")]


def test_only_one_leading_space_is_stripped_and_colon_is_optional():
    assert decode_all("data:no-space\n\n") == [SSEEvent("message", "no-space")]
    assert decode_all("data:  two\n\n") == [SSEEvent("message", " two")]
    assert decode_all("data\n\n") == [SSEEvent("message", "")]
    assert decode_all("data: a: b\n\n") == [SSEEvent("message", "a: b")]


def test_events_without_data_are_not_dispatched():
    assert decode_all("event: ping\n\n\n\nid: 3\n\n") == []


def test_id_and_retry_are_carried():
    events = decode_all("id: 7\nretry: 1500\ndata: a\n\nretry: soon\ndata: b\n\n")
    assert events == [SSEEvent("message", "a", "7", 1500), SSEEvent("message", "b", "7", 1500)]


def test_id_with_nul_is_ignored():
    assert decode_all("id: a\0b\ndata: x\n\n") == [SSEEvent("message", "x", None)]


def test_crlf_and_cr_line_endings():
    assert decode_all(b"data: a\r\n\r\ndata: b\r\rdata: c\n\n") == [
        SSEEvent("message", "a"), SSEEvent("message", "b"), SSEEvent("message", "c"),
    ]


def test_crlf_split_between_chunks_is_one_line_end():
    assert decode_all(b"data: a\r", b"\n\r", b"\n") == [SSEEvent("message", "a")]
    assert decode_all(b"data: a\r", b"", b"\n", b"\r\n") == [SSEEvent("message", "a")]


def test_line_split_across_chunks():
    assert decode_all(b"da", b"ta: hel", b"lo\n", b"\n") == [SSEEvent("message", "hello")]


def test_utf8_sequence_split_across_chunks():
    raw = "data: caf\u00e9 \u2603\n\n".encode()
    assert decode_all(*[raw[i : i + 1] for i in range(len(raw))]) == [SSEEvent("message", "caf\u00e9 \u2603")]


def test_leading_bom_is_dropped_once():
    raw = "\ufeffdata: x\n\n".encode()
    assert decode_all(raw[:2], raw[2:]) == [SSEEvent("message", "x")]
    # A later BOM is part of the field name, which makes the line an unknown field.
    assert decode_all("\ufeffdata: x\n\n\ufeffdata: y\n\n") == [SSEEvent("message", "x")]


def test_invalid_utf8_is_replaced_not_raised():
    assert decode_all(b"data: \xff\n\n") == [SSEEvent("message", "\ufffd")]


def test_final_event_without_blank_line_is_delivered_on_close():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: [DONE]") == []
    assert decoder.close() == [SSEEvent("message", "[DONE]")]


def test_feed_returns_events_as_soon_as_they_complete():
    decoder = SSEDecoder()
    assert decoder.feed("data: 1\n\ndata: 2\n") == [SSEEvent("message", "1")]
    assert decoder.feed("\n") == [SSEEvent("message", "2")]


async def test_aiter_sse():
    async def chunks():
        for piece in (b"data: a\n", b"\ndata: b\n\ndata: c"):
            yield piece

    assert [event.data async for event in aiter_sse(chunks())] == ["a", "b", "c"]


_line_text = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=12)
_event_name = st.text(st.characters(blacklist_characters="\r\n:", blacklist_categories=("Cs",)), min_size=1,
                      max_size=8).filter(lambda s: s.strip() == s)
_event = st.tuples(st.one_of(st.none(), _event_name), st.lists(_line_text, min_size=1, max_size=3),
                   st.booleans())


def _serialize(events: list[tuple[str | None, list[str], bool]], newline: str) -> tuple[str, list[SSEEvent]]:
    parts, expected = [], []
    for name, lines, with_comment in events:
        if with_comment:
            parts.append(": comment" + newline)
        if name is not None:
            parts.append(f"event: {name}{newline}")
        parts.extend(f"data: {line}{newline}" for line in lines)
        parts.append(newline)
        expected.append(SSEEvent(name or "message", "\n".join(lines)))
    return "".join(parts), expected


@settings(max_examples=150, deadline=None)
@given(
    events=st.lists(_event, max_size=6),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_any_split_of_a_stream_yields_the_same_events(events, newline, cuts):
    text, expected = _serialize(events, newline)
    raw = text.encode()
    points = sorted({c % (len(raw) + 1) for c in cuts})
    chunks = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    assert decode_all(raw) == expected
    assert decode_all(*chunks) == expected
