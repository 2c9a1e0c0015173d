"""The OpenAI-compatible client and generator against a real local HTTP server (tests/openai_server.py)."""

from __future__ import annotations

import logging
import random
import socket

import pytest
from openai_server import Reply, completion, error, raw

from rag.generate.factory import load_generator
from rag.generate.openai import OpenAIGenerator
from rag.generate.openai_client import OpenAIClient, OpenAIError, parse_retry_after
from rag.records import Passage

KEY = "sk-test-7f3a9c1e5b2d4f60SECRET"
PASSAGES = [Passage(1, "The treaty was signed in 1795.", 10, "a.txt", 0, 30),
            Passage(2, "Congress met in Philadelphia.", 11, "b.txt", 5, 34)]


class Waits(list):
    """Records the waits the client asks for instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make(server, waits=None, **options) -> OpenAIGenerator:
    options.setdefault("api_key", KEY)
    client = OpenAIClient(server.base_url, options.pop("api_key"), timeout=options.pop("timeout", 5.0),
                          max_retries=options.pop("max_retries", 3), sleep=waits if waits is not None else Waits(),
                          rng=random.Random(0), backoff=options.pop("backoff", 0.5))
    return OpenAIGenerator("test-model", client=client, **options)


def test_normal_completion_sends_messages_key_and_settings(openai_server):
    openai_server.push(completion("It was signed in 1795 [1]."))
    gen = make(openai_server, temperature=0.2, max_tokens=64)
    out = gen.generate("When was the treaty signed?", PASSAGES)
    assert out.text == "It was signed in 1795 [1]."
    assert out.citations == [1]
    assert out.prompt_tokens == 11 and out.completion_tokens == 6
    assert out.metadata["attempts"] == 1 and out.metadata["finish_reason"] == "stop"
    (request,) = openai_server.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    payload = request.payload
    assert payload["model"] == "test-model" and payload["temperature"] == 0.2 and payload["max_tokens"] == 64
    assert "stream" not in payload
    assert [m["role"] for m in payload["messages"]] == ["system", "user"]
    user = payload["messages"][1]["content"]
    assert "[1] The treaty was signed in 1795." in user and "[2] Congress met in Philadelphia." in user
    assert "When was the treaty signed?" in user


def test_streaming_passes_pieces_in_order(openai_server):
    pieces = ["Signed ", "in ", "1795 ", "[1]", " and [2]."]
    openai_server.push(completion("".join(pieces), chunks=pieces))
    received: list[str] = []
    out = make(openai_server).generate("When?", PASSAGES, on_token=received.append)
    assert received == pieces
    assert out.text == "Signed in 1795 [1] and [2]."
    assert out.citations == [1, 2]
    assert openai_server.requests[0].payload["stream"] is True
    assert openai_server.requests[0].headers["Accept"] == "text/event-stream"


def test_streaming_retries_before_any_text_but_never_after(openai_server):
    pieces = ["One ", "two ", "three."]
    openai_server.push(error(429, "busy", retry_after="0"), completion("".join(pieces), chunks=pieces))
    received: list[str] = []
    out = make(openai_server).generate("q", PASSAGES, on_token=received.append)
    assert received == pieces and out.text == "One two three." and out.metadata["attempts"] == 2

    openai_server.push(Reply(content="".join(pieces), chunks=pieces, cut_after=2), completion("again"))
    received.clear()
    with pytest.raises(OpenAIError, match=r"stream ended before the reply was complete .*not retried"):
        make(openai_server).generate("q", PASSAGES, on_token=received.append)
    assert received == pieces[:2]            # what arrived was passed on once, and not repeated
    assert len(openai_server.requests) == 3  # no retry after text had streamed ...
    assert [r.content for r in openai_server.script] == ["again"]   # ... so the next reply is still queued
    openai_server.script.clear()

    openai_server.push(Reply(content="x", cut_after=0), completion("whole"))
    received.clear()
    assert make(openai_server).generate("q", PASSAGES, on_token=received.append).text == "whole"
    assert received == ["whole"]


def test_404_hints_at_the_base_url(openai_server):
    client = OpenAIClient(openai_server.base_url[: -len("/v1")], sleep=Waits())
    with pytest.raises(OpenAIError, match=r"HTTP 404.*no route /chat/completions.*/v1"):
        client.chat([{"role": "user", "content": "hi"}], "m")


def test_key_from_environment_and_no_key_sends_no_header(openai_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    gen = load_generator("openai:env-model")
    assert gen.generate("q", PASSAGES).text == "OK [1]"
    assert openai_server.requests[-1].headers["Authorization"] == f"Bearer {KEY}"
    assert openai_server.requests[-1].payload["model"] == "env-model"
    monkeypatch.delenv("OPENAI_API_KEY")
    OpenAIGenerator("m", base_url=openai_server.base_url).generate("q", PASSAGES)
    assert "Authorization" not in openai_server.requests[-1].headers


def test_429_with_retry_after_is_honoured_then_succeeds(openai_server):
    openai_server.push(error(429, "rate limited", retry_after="3"), error(429, "rate limited again"),
                       completion("Done [2]."))
    waits = Waits()
    out = make(openai_server, waits).generate("q", PASSAGES)
    assert out.text == "Done [2]." and out.citations == [2]
    assert out.metadata["attempts"] == 3
    assert len(openai_server.requests) == 3
    assert waits[0] == 3.0                  # the server's Retry-After
    assert 0.5 <= waits[1] < 1.0            # second retry: backoff 0.5 * 2, jitter in [0.5, 1)


def test_500_retries_with_exponential_backoff_then_succeeds(openai_server):
    openai_server.push(error(500, "boom"), error(502, "bad gateway"), error(503, "busy"), completion("fine"))
    waits = Waits()
    out = make(openai_server, waits, max_retries=3, backoff=1.0).generate("q", PASSAGES)
    assert out.text == "fine" and out.metadata["attempts"] == 4
    assert len(waits) == 3
    for i, wait in enumerate(waits):      # ceiling 1, 2, 4 s; jitter factor in [0.5, 1)
        assert 0.5 * 2 ** i <= wait < 2 ** i


def test_retries_exhausted_names_status_and_server_message(openai_server):
    openai_server.push(*[error(503, "model is overloaded")] * 3)
    waits = Waits()
    with pytest.raises(OpenAIError) as info:
        make(openai_server, waits, max_retries=2).generate("q", PASSAGES)
    message = str(info.value)
    assert "HTTP 503" in message and "model is overloaded" in message and "after 3 attempts" in message
    assert info.value.status == 503 and info.value.attempts == 3
    assert len(openai_server.requests) == 3 and len(waits) == 2


def test_client_error_is_not_retried(openai_server):
    openai_server.push(error(400, "unknown field 'foo'"))
    with pytest.raises(OpenAIError, match=r"HTTP 400.*unknown field 'foo'"):
        make(openai_server).generate("q", PASSAGES)
    assert len(openai_server.requests) == 1


def test_timeout_is_retried_then_reported(openai_server):
    openai_server.push(Reply(content="late", delay=3.0), completion("on time"))
    waits = Waits()
    out = make(openai_server, waits, timeout=0.3, max_retries=1).generate("q", PASSAGES)
    assert out.text == "on time" and len(waits) == 1
    openai_server.push(Reply(content="late", delay=3.0))
    with pytest.raises(OpenAIError, match=r"timed out after 0.3 s .*after 1 attempt") as info:
        make(openai_server, timeout=0.3, max_retries=0).generate("q", PASSAGES)
    assert info.value.status is None


def test_dropped_connection_and_refused_connection(openai_server):
    openai_server.push(Reply(drop=True), completion("again"))
    assert make(openai_server).generate("q", PASSAGES).text == "again"
    with socket.socket() as probe:          # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = OpenAIClient(f"http://127.0.0.1:{port}/v1", KEY, max_retries=2, sleep=Waits())
    with pytest.raises(OpenAIError, match=r"connection failed .*after 3 attempts"):
        client.chat([{"role": "user", "content": "hi"}], "m")


def test_malformed_json_body_is_a_clear_error(openai_server):
    openai_server.push(raw(b"{not json"))
    with pytest.raises(OpenAIError, match="not JSON"):
        make(openai_server).generate("q", PASSAGES)
    openai_server.push(raw(b'{"object": "chat.completion"}'))
    with pytest.raises(OpenAIError, match=r"without choices\[0\]\.message"):
        make(openai_server).generate("q", PASSAGES)


def test_key_never_in_logs_errors_or_reprs(openai_server, caplog):
    caplog.set_level(logging.DEBUG)
    openai_server.push(error(500, "internal"), error(401, f"Incorrect API key provided: {KEY}"))
    gen = make(openai_server, max_retries=2)
    with pytest.raises(OpenAIError) as info:
        gen.generate("q", PASSAGES)
    assert "HTTP 401" in str(info.value) and "Incorrect API key provided: ***" in str(info.value)
    openai_server.push(*[error(500, "internal")] * 3)
    with pytest.raises(OpenAIError) as info2:
        gen.generate("q", PASSAGES)
    assert "retry 1/2" in caplog.text            # the retries were logged ...
    for text in (caplog.text, str(info.value), repr(info.value), info.value.server_message, str(info2.value),
                 repr(gen), repr(gen.client), str(vars(info.value))):
        assert KEY not in text                   # ... without the key
    assert openai_server.requests[0].headers["Authorization"] == f"Bearer {KEY}"


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="not an http"):
        OpenAIClient("localhost:8000/v1")
    with pytest.raises(ValueError, match="needs a model"):
        load_generator("openai:")
    with pytest.raises(ValueError, match="timeout must be positive"):
        OpenAIClient("http://127.0.0.1:1/v1", timeout=0)


def test_parse_retry_after():
    assert parse_retry_after({"Retry-After": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250", "Retry-After": "9"}) == 0.25
    assert parse_retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0   # in the past
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None
