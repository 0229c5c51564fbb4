"""An incremental server-sent events (SSE) parser following the WHATWG event-stream rules."""

from __future__ import annotations

import codecs
import re
from collections.abc import AsyncIterable, AsyncIterator
from typing import NamedTuple

_LINE_END = re.compile(r"\r\n|\r|\n")


class SSEEvent(NamedTuple):
    """One dispatched event: its type ("message" unless an `event:` field said otherwise) and data.

    A NamedTuple (immutable, as a frozen dataclass would be): one is made per event, and a tuple is made faster.
    """

    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Feed bytes or text in chunks of any size; get back the events each chunk completes.

    Lines may be split anywhere across chunks, including inside a UTF-8 sequence or between the
    CR and LF of a CRLF. close() delivers a final event even when the stream ends without the
    blank line that should terminate it, which tolerates servers that omit it.
    """

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial_line = ""
        self._skip_lf = False  # the previous chunk ended in CR, which may be half of a CRLF
        self._at_start = True
        self._event = ""
        self._data: list[str] = []
        self._last_id: str | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes | str) -> list[SSEEvent]:
        text = self._utf8.decode(chunk) if isinstance(chunk, bytes) else chunk
        return self._feed_text(text)

    def close(self) -> list[SSEEvent]:
        """Flush the decoder at the end of the stream."""
        events = self._feed_text(self._utf8.decode(b"", final=True))
        if self._partial_line:
            self._process_line(self._partial_line, events)
            self._partial_line = ""
        self._dispatch(events)
        return events

    def _feed_text(self, text: str) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        if not text:
            return events
        if self._at_start:
            self._at_start = False
            if text.startswith("\ufeff"):
                text = text[1:]
        if self._skip_lf:
            self._skip_lf = False
            if text.startswith("\n"):
                text = text[1:]
        buffer = self._partial_line + text
        # Nearly every provider ends lines with LF alone: str.split is ~5x faster than the regex.
        lines = _LINE_END.split(buffer) if "\r" in buffer else buffer.split("\n")
        self._partial_line = lines.pop()
        self._skip_lf = buffer.endswith("\r")
        for line in lines:
            # Nearly every line a provider sends is "data: ..." or the blank line ending an event: handled here
            # without a call per line; anything else goes through _process_line.
            if not line:
                self._dispatch(events)
            elif line.startswith("data: "):
                self._data.append(line[6:])
            else:
                self._process_line(line, events)
        return events

    def _process_line(self, line: str, events: list[SSEEvent]) -> None:
        if not line:
            self._dispatch(events)
            return
        if line.startswith(":"):
            return  # comment, often a keep-alive
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                self._retry = int(value)

    def _dispatch(self, events: list[SSEEvent]) -> None:
        if self._data:
            data = self._data[0] if len(self._data) == 1 else "\n".join(self._data)
            events.append(SSEEvent(self._event or "message", data, self._last_id, self._retry))
            self._data = []
        self._event = ""


async def aiter_sse(byte_iter: AsyncIterable[bytes] | AsyncIterable[str]) -> AsyncIterator[SSEEvent]:
    """Events from an async iterable of byte (or text) chunks."""
    decoder = SSEDecoder()
    async for chunk in byte_iter:
        for event in decoder.feed(chunk):
            yield event
    for event in decoder.close():
        yield event
