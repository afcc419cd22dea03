"""The fake OpenAI server is faithful: the real ChatOpenAI / openai client stream, parse and fail against it.

Every test drives the unmodified client over loopback HTTP, so a fake that drifted from the wire protocol the
SDK expects would fail here first.
"""

from __future__ import annotations

import base64
import math
import time
from typing import Literal

import numpy as np
import openai
import pytest
from langchain_core.messages import AIMessageChunk
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import BaseModel, Field

from tests.fakes.openai_server import FakeOpenAI, Fault, Reply, ToolCall, default_responder, fake_openai  # noqa: F401


class Choice(BaseModel):
    """A routing decision shaped like the core's."""

    agent: Literal["billing", "technical", "policy"]
    reason: str = Field(default="", description="why")


def chat(fake: FakeOpenAI, **kwargs) -> ChatOpenAI:
    options = dict(model="gpt-4o-mini", api_key="test-key", base_url=fake.base_url, max_retries=0,
                   streaming=True, stream_usage=True)
    options.update(kwargs)
    return ChatOpenAI(**options)


# --- streaming text ----------------------------------------------------------------------------------------------


async def test_stream_yields_each_word_in_order_and_usage_on_the_last_chunk(fake_openai: FakeOpenAI) -> None:
    fake_openai.responder = lambda body: Reply(text="one two three four")
    chunks = [c async for c in chat(fake_openai).astream("hi")]
    assert [c.content for c in chunks if c.content] == ["one ", "two ", "three ", "four"]
    assert "".join(c.content for c in chunks) == "one two three four"
    # One usage report, after every token (langchain-core then appends an empty closing chunk of its own).
    with_usage = [i for i, c in enumerate(chunks) if c.usage_metadata]
    last_token = max(i for i, c in enumerate(chunks) if c.content)
    assert len(with_usage) == 1 and with_usage[0] > last_token
    usage = chunks[with_usage[0]].usage_metadata
    assert usage["output_tokens"] == 4 and usage["input_tokens"] > 0
    body = fake_openai.chat_requests[0].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


async def test_chunk_size_groups_words_into_chunks(fake_openai: FakeOpenAI) -> None:
    fake_openai.responder = lambda body: Reply(text="a b c d e f g", chunk_size=3)
    pieces = [c.content async for c in chat(fake_openai).astream("hi") if c.content]
    assert pieces == ["a b c ", "d e f ", "g"]


async def test_default_answer_quotes_the_question_in_several_sentences(fake_openai: FakeOpenAI) -> None:
    message = await chat(fake_openai, streaming=False).ainvoke("How do I rotate my API key safely today please?")
    assert "“How do I rotate my API”" in message.content
    assert message.content.count(". ") >= 2
    assert message.usage_metadata and message.usage_metadata["output_tokens"] == len(message.content.split())


async def test_default_answer_quotes_the_question_after_the_retrieved_passages() -> None:
    body = {"messages": [{"role": "user", "content": "Passages: lorem ipsum\n\nQuestion: Why was I charged twice?"}]}
    assert "“Why was I charged twice?”" in default_responder(body).text


async def test_non_streamed_request_without_stream_options_is_accepted(fake_openai: FakeOpenAI) -> None:
    # Real OpenAI rejects stream_options on a non-streamed request; ChatOpenAI must not send it there.
    message = await chat(fake_openai, streaming=False).ainvoke("hi")
    assert message.content and "stream_options" not in fake_openai.chat_requests[0].body
    assert fake_openai.chat_requests[0].streamed is False


# --- structured output -------------------------------------------------------------------------------------------


# langchain's model_dump of the openai stream helper's parsed events warns; real OpenAI answers trigger it too.
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
@pytest.mark.parametrize("streaming", [True, False])
async def test_structured_output_by_json_schema_is_filled_by_keywords(fake_openai: FakeOpenAI, streaming) -> None:
    router = chat(fake_openai, streaming=streaming).with_structured_output(Choice)
    result = await router.ainvoke("Do you comply with GDPR and keep my privacy?")
    assert isinstance(result, Choice) and result.agent == "policy"
    response_format = fake_openai.chat_requests[0].body["response_format"]
    assert response_format["type"] == "json_schema" and response_format["json_schema"]["name"] == "Choice"


async def test_structured_output_by_function_calling_arrives_in_deltas(fake_openai: FakeOpenAI) -> None:
    model = chat(fake_openai)
    router = model.with_structured_output(Choice, method="function_calling")
    assert await router.ainvoke("I need a refund for my last invoice") == Choice(agent="billing",
                                                                              reason="fake reason")
    body = fake_openai.chat_requests[0].body
    assert body["tool_choice"] == {"type": "function", "function": {"name": "Choice"}}

    fake_openai.responder = lambda body: Reply(json={"agent": "technical", "reason": "the webhook keeps failing"})
    chunks: list[AIMessageChunk] = [c async for c in model.bind_tools([Choice], tool_choice="Choice").astream("x")]
    calls = [c.tool_call_chunks[0] for c in chunks if c.tool_call_chunks]
    assert calls[0]["name"] == "Choice" and calls[0]["args"] == ""  # the name comes first, alone
    assert all(call["name"] is None for call in calls[1:]) and len(calls) > 3  # arguments split across chunks
    merged = sum(chunks[1:], chunks[0])
    assert merged.tool_calls[0]["args"] == {"agent": "technical", "reason": "the webhook keeps failing"}


async def test_first_enum_value_when_no_keyword_matches(fake_openai: FakeOpenAI) -> None:
    router = chat(fake_openai).with_structured_output(Choice, method="function_calling")
    assert (await router.ainvoke("hello there")).agent == "billing"


async def test_explicit_tool_call_and_legacy_tool_arguments(fake_openai: FakeOpenAI) -> None:
    fake_openai.responder = lambda body: Reply(tool_call=ToolCall({"agent": "policy"}, name="Choice"))
    model = chat(fake_openai, streaming=False).bind_tools([Choice])
    message = await model.ainvoke("x")
    assert message.tool_calls[0]["name"] == "Choice" and message.tool_calls[0]["args"] == {"agent": "policy"}
    assert message.response_metadata["finish_reason"] == "tool_calls"  # the model chose to call it
    forced = await chat(fake_openai, streaming=False).bind_tools([Choice], tool_choice="Choice").ainvoke("x")
    assert forced.tool_calls and forced.response_metadata["finish_reason"] == "stop"  # as OpenAI does when forced
    assert Reply(tool_arguments={"a": 1}).json == {"a": 1}


# --- faults ------------------------------------------------------------------------------------------------------


async def test_rate_limit_raises_with_retry_after_and_openai_error_body(fake_openai: FakeOpenAI) -> None:
    fake_openai.faults.append(Fault(status=429, retry_after=3))
    with pytest.raises(openai.RateLimitError) as error:
        await chat(fake_openai).ainvoke("hi")
    assert error.value.response.headers["retry-after"] == "3"
    assert error.value.body["type"] == "rate_limit_exceeded" and error.value.code == "rate_limit_exceeded"
    assert await chat(fake_openai).ainvoke("hi")  # one fault per request: the next one succeeds


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_raise_internal_server_error(fake_openai: FakeOpenAI, status: int) -> None:
    fake_openai.faults.append(Fault(status=status))
    with pytest.raises(openai.InternalServerError) as error:
        await chat(fake_openai).ainvoke("hi")
    assert error.value.status_code == status


async def test_hang_makes_the_client_time_out(fake_openai: FakeOpenAI) -> None:
    fake_openai.faults.append(Fault(hang=True))
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        await chat(fake_openai, timeout=0.5).ainvoke("hi")
    assert 0.4 < time.monotonic() - started < 5


async def test_stopping_the_fake_releases_a_hung_request() -> None:
    started = time.monotonic()
    async with FakeOpenAI() as fake:
        fake.faults.append(Fault(hang=True))
        with pytest.raises(openai.APITimeoutError):
            await chat(fake, timeout=0.3).ainvoke("hi")
    assert time.monotonic() - started < 3  # the server did not wait for the hung handler


async def test_drop_after_tokens_cuts_the_stream_after_n_tokens(fake_openai: FakeOpenAI) -> None:
    fake_openai.faults.append(Fault(drop_after_tokens=2))
    fake_openai.responder = lambda body: Reply(text="a b c d e f")
    received: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        async for chunk in chat(fake_openai).astream("hi"):
            received.append(chunk.content)
    assert "".join(received) == "a b "


async def test_drop_with_error_sends_openais_mid_stream_error(fake_openai: FakeOpenAI) -> None:
    fake_openai.faults.append(Fault(drop_after_tokens=1, drop_with_error=True))
    received: list[str] = []
    with pytest.raises(openai.APIError, match="error while streaming"):
        async for chunk in chat(fake_openai).astream("hi"):
            received.append(chunk.content)
    assert len("".join(received).split()) == 1


async def test_slow_fault_delays_one_answer_only(fake_openai: FakeOpenAI) -> None:
    fake_openai.faults.append(Fault(delay_s=0.4))
    started = time.monotonic()
    await chat(fake_openai).ainvoke("hi")
    slow = time.monotonic() - started
    started = time.monotonic()
    await chat(fake_openai).ainvoke("hi")
    assert slow >= 0.4 and time.monotonic() - started < slow


async def test_faults_wait_for_their_own_endpoint(fake_openai: FakeOpenAI) -> None:
    fake_openai.faults.append(Fault(status=503, endpoint="embeddings"))
    assert await chat(fake_openai).ainvoke("hi")  # the chat request does not consume it
    client = openai.AsyncOpenAI(api_key="k", base_url=fake_openai.base_url, max_retries=0)
    with pytest.raises(openai.InternalServerError):
        await client.embeddings.create(model="e", input="x")


# --- pacing ------------------------------------------------------------------------------------------------------


async def test_ttft_and_tokens_per_second_are_honoured(fake_openai: FakeOpenAI) -> None:
    fake_openai.ttft_s, fake_openai.tokens_per_s = 0.3, 20
    fake_openai.responder = lambda body: Reply(text=" ".join(["word"] * 11))
    started = time.monotonic()
    arrivals = [time.monotonic() - started async for c in chat(fake_openai).astream("hi") if c.content]
    assert len(arrivals) == 11
    assert 0.3 <= arrivals[0] < 1.5  # time to first token
    # the server cannot finish before its first token plus ten gaps at 20 tokens/s; measured from the start, as a
    # busy client may read the first tokens late and the rest at once
    assert (0.3 + 10 / 20) * 0.95 <= arrivals[-1] < (0.3 + 10 / 20) * 4


async def test_per_reply_pacing_overrides_the_server_knobs(fake_openai: FakeOpenAI) -> None:
    fake_openai.ttft_s = 5.0
    fake_openai.responder = lambda body: Reply(text="quick", ttft_s=0.0)
    started = time.monotonic()
    await chat(fake_openai).ainvoke("hi")
    assert time.monotonic() - started < 2


# --- embeddings, models, n -----------------------------------------------------------------------------------------


async def test_embeddings_are_deterministic_unit_vectors_of_the_configured_size() -> None:
    async with FakeOpenAI(embedding_dim=24) as fake:
        embedder = OpenAIEmbeddings(model="text-embedding-3-small", api_key="test-key", base_url=fake.base_url,
                                    check_embedding_ctx_length=False, max_retries=0)
        vectors = await embedder.aembed_documents(["refunds", "webhooks", "refunds"])
        query = await embedder.aembed_query("refunds")
        encoding = fake.embedding_requests[0].body.get("encoding_format")
    assert [len(v) for v in vectors] == [24, 24, 24]
    assert all(math.isclose(float(np.linalg.norm(v)), 1.0, rel_tol=1e-5) for v in vectors)
    assert vectors[0] == vectors[2] == query and vectors[0] != vectors[1]
    assert encoding == "base64"  # what the openai client asks for by default, decoded by it


async def test_embeddings_answer_float_and_base64_and_dimensions(fake_openai: FakeOpenAI) -> None:
    client = openai.AsyncOpenAI(api_key="k", base_url=fake_openai.base_url, max_retries=0)
    floats = (await client.embeddings.create(model="e", input="x", encoding_format="float")).data[0].embedding
    raw = (await client.embeddings.create(model="e", input="x", encoding_format="base64")).data[0].embedding
    decoded = np.frombuffer(base64.b64decode(raw), dtype="<f4")
    assert len(floats) == 64 and np.allclose(decoded, floats)
    sized = await client.embeddings.create(model="e", input=["x", "y"], dimensions=8)
    assert [len(d.embedding) for d in sized.data] == [8, 8]


async def test_models_n_choices_and_max_tokens(fake_openai: FakeOpenAI) -> None:
    client = openai.AsyncOpenAI(api_key="k", base_url=fake_openai.base_url, max_retries=0)
    assert [m.id async for m in client.models.list()] == fake_openai.models
    fake_openai.responder = lambda body: [Reply(text="first answer"), Reply(text="second answer")]
    completion = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}], n=2)
    assert [c.message.content for c in completion.choices] == ["first answer", "second answer"]
    fake_openai.responder = default_responder
    cut = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}],
                                               max_completion_tokens=3)
    assert cut.choices[0].finish_reason == "length" and len(cut.choices[0].message.content.split()) == 3


async def test_malformed_chat_request_gets_a_400(fake_openai: FakeOpenAI) -> None:
    client = openai.AsyncOpenAI(api_key="k", base_url=fake_openai.base_url, max_retries=0)
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="m", messages=[])


# --- recording, lifecycle ----------------------------------------------------------------------------------------


async def test_requests_are_recorded_without_the_api_key(fake_openai: FakeOpenAI) -> None:
    before = time.monotonic()
    await chat(fake_openai).ainvoke("first")
    await chat(fake_openai, streaming=False).ainvoke("second")
    first, second = fake_openai.requests
    assert (first.path, first.method, first.streamed, second.streamed) == ("/v1/chat/completions", "POST", True, False)
    assert before <= first.at <= second.at
    assert first.body["messages"][-1] == {"role": "user", "content": "first"}
    assert first.headers["Authorization"] == "<redacted>"
    assert "test-key" not in repr(fake_openai.requests)
    assert first.headers["Content-Type"] == "application/json"
    fake_openai.faults.append(Fault(status=500))
    fake_openai.ttft_s = 9
    fake_openai.reset()
    assert (fake_openai.requests, list(fake_openai.faults), fake_openai.ttft_s) == ([], [], 0.0)


async def test_plain_start_and_stop() -> None:
    fake = await FakeOpenAI().start()
    url = fake.base_url
    assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
    assert await chat(fake).ainvoke("hi")
    await fake.stop()
    with pytest.raises(RuntimeError):
        fake.base_url  # noqa: B018


def test_thread_mode_serves_synchronous_clients() -> None:
    fake = FakeOpenAI(embedding_dim=16).start_in_thread()
    try:
        fake.responder = lambda body: Reply(text="from another loop")
        model = ChatOpenAI(model="gpt-4o-mini", api_key="test-key", base_url=fake.base_url, max_retries=0)
        assert model.invoke("hi").content == "from another loop"
        assert "".join(c.content for c in model.stream("hi")) == "from another loop"
        client = openai.OpenAI(api_key="k", base_url=fake.base_url, max_retries=0)
        assert [m.id for m in client.models.list().data] == fake.models
        vectors = client.embeddings.create(model="e", input=["a", "b"]).data
        assert [len(v.embedding) for v in vectors] == [16, 16]
        assert len(fake.chat_requests) == 2
    finally:
        fake.stop_thread()
