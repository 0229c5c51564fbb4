"""The classify streams' pure parts: the reopen backoff and the stream-count setting."""

from __future__ import annotations

import pytest

from routemesh.router.clients.classifier import STREAMS_ENV, streams_from_env
from routemesh.router.clients.classify_stream import Backoff


def test_the_backoff_doubles_per_failure_up_to_its_cap_and_an_answer_resets_it() -> None:
    backoff = Backoff(initial_s=0.1, max_s=0.3)
    assert backoff.ready(0.0)
    waits = []
    for now in (0.0, 1.0, 2.0, 3.0):
        backoff.failed(now)
        assert not backoff.ready(now)
        waits.append(next(t for t in (x / 100 for x in range(100)) if backoff.ready(now + t)))
    assert waits == pytest.approx([0.1, 0.2, 0.3, 0.3])
    backoff.succeeded()
    assert backoff.ready(3.0)
    backoff.failed(10.0)
    assert not backoff.ready(10.09) and backoff.ready(10.1)


def test_the_stream_count_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.delenv(STREAMS_ENV, raising=False)
    assert streams_from_env() == 2
    monkeypatch.setenv(STREAMS_ENV, "0")
    assert streams_from_env() == 0
    for bad in ("-1", "two", "17", ""):
        monkeypatch.setenv(STREAMS_ENV, bad)
        with pytest.raises(SystemExit, match=STREAMS_ENV):
            streams_from_env()
