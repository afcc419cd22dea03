"""The fake OpenAI server is faithful enough: the real ChatOpenAI streams, parses tool calls and sees errors."""

from __future__ import annotations

import openai
import pytest
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from tests.fakes.openai_server import FakeOpenAI, Fault, Reply


class Choice(BaseModel):
    agent: str
    reason: str = ""


def _model(fake: FakeOpenAI, **kwargs) -> ChatOpenAI:
    return ChatOpenAI(model="gpt-4o-mini", api_key="test-key", base_url=fake.base_url, max_retries=0,
                      streaming=True, stream_usage=True, **kwargs)


async def test_streaming_yields_every_token_and_usage() -> None:
    async with FakeOpenAI() as fake:
        fake.responder = lambda body: Reply(text="one two three four")
        chunks = [c async for c in _model(fake).astream("hi")]
    text = "".join(c.content for c in chunks)
    assert text == "one two three four"
    assert sum(1 for c in chunks if c.content) == 4
    assert any(c.usage_metadata and c.usage_metadata["output_tokens"] == 4 for c in chunks)
    assert fake.chat_requests[0].body["stream"] is True


async def test_structured_output_by_function_calling_arrives_in_deltas() -> None:
    async with FakeOpenAI() as fake:
        fake.responder = lambda body: Reply(tool_arguments={"agent": "policy", "reason": "gdpr"})
        result = await _model(fake).with_structured_output(Choice, method="function_calling").ainvoke("GDPR?")
    assert result == Choice(agent="policy", reason="gdpr")


async def test_rate_limit_surfaces_with_retry_after() -> None:
    async with FakeOpenAI() as fake:
        fake.faults.append(Fault(status=429, retry_after=3))
        with pytest.raises(openai.RateLimitError) as error:
            await _model(fake).ainvoke("hi")
    assert error.value.response.headers["retry-after"] == "3"


async def test_server_error_and_hang_and_drop() -> None:
    async with FakeOpenAI() as fake:
        fake.faults.append(Fault(status=500))
        with pytest.raises(openai.InternalServerError):
            await _model(fake).ainvoke("hi")
        fake.faults.append(Fault(hang=True))
        with pytest.raises(openai.APITimeoutError):
            await _model(fake, timeout=0.5).ainvoke("hi")
        fake.faults.append(Fault(drop_after_tokens=2))
        fake.responder = lambda body: Reply(text="a b c d e f")
        received = []
        with pytest.raises(Exception):
            async for chunk in _model(fake).astream("hi"):
                received.append(chunk.content)
        assert "".join(received) == "a b "


def test_thread_mode_serves_a_synchronous_client() -> None:
    fake = FakeOpenAI().start_in_thread()
    try:
        client = openai.OpenAI(api_key="k", base_url=fake.base_url)
        assert [m.id for m in client.models.list().data] == fake.models
        vectors = client.embeddings.create(model="e", input=["a", "b"]).data
        assert len(vectors) == 2 and len(vectors[0].embedding) == fake.embedding_dim
    finally:
        fake.stop_thread()
