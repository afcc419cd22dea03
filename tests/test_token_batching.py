"""`core.token_batching`: the first piece at once, then what arrives within an interval as one text; and, end
to end, a turn whose model streams fast hands its answer on in a few `Token` events, complete and in order."""

from __future__ import annotations

import asyncio

import pytest

from core.events import Complete, Token
from core.orchestrator import build_orchestrator
from core.token_batching import TokenBatcher
from tests.conftest import make_settings
from tests.fakes.openai_server import FakeOpenAI, Reply


async def test_the_first_piece_goes_at_once_and_the_next_ones_wait_for_the_interval() -> None:
    emitted: list[str] = []
    batcher = TokenBatcher(emitted.append, 0.05)
    batcher.feed("Hello")
    assert emitted == ["Hello"]  # nothing was handed on before: no wait
    batcher.feed(" there")
    batcher.feed(",")
    assert emitted == ["Hello"]  # within the interval: held
    await asyncio.sleep(0.08)
    assert emitted == ["Hello", " there,"]  # one text, on the timer, without another piece arriving
    assert batcher.batches == 2


async def test_a_piece_after_a_quiet_interval_is_not_delayed() -> None:
    emitted: list[str] = []
    batcher = TokenBatcher(emitted.append, 0.02)
    batcher.feed("a")
    await asyncio.sleep(0.04)
    batcher.feed("b")  # a slow model: every token goes on as it comes
    assert emitted == ["a", "b"]


async def test_flush_hands_on_what_is_pending_and_stops_the_timer() -> None:
    emitted: list[str] = []
    batcher = TokenBatcher(emitted.append, 0.05)
    batcher.feed("a")
    batcher.feed("b")
    batcher.feed("c")
    batcher.flush()
    assert emitted == ["a", "bc"]
    await asyncio.sleep(0.08)
    assert emitted == ["a", "bc"]  # the timer did not fire a second, empty or repeated hand-over
    batcher.flush()
    assert emitted == ["a", "bc"]


async def test_zero_interval_hands_on_every_piece_and_empty_pieces_never() -> None:
    emitted: list[str] = []
    batcher = TokenBatcher(emitted.append, 0)
    for piece in ("a", "", "b", "c"):
        batcher.feed(piece)
    assert emitted == ["a", "b", "c"]
    with pytest.raises(ValueError):
        TokenBatcher(emitted.append, -1)


async def _answer(settings, key: str) -> list:
    orchestrator = await build_orchestrator(settings)
    try:
        return [event async for event in orchestrator.respond(key, "How do I fix API timeouts?")]
    finally:
        await orchestrator.aclose()


async def test_a_fast_model_answer_reaches_the_turn_in_a_few_events_whole_and_in_order(corpus_settings) -> None:
    words = [f"w{i}" for i in range(200)]
    async with FakeOpenAI(tokens_per_s=1000) as fake:  # 200 tokens in ~0.2 s
        fake.responder = lambda body: Reply(text=" ".join(words))
        batched, unbatched = [
            await _answer(make_settings(corpus_settings.data_dir, llm_provider="openai", openai_base_url=fake.base_url,
                                        openai_api_key="sk-test", stream_batch_ms=ms), f"batching:{ms}")
            for ms in (100, 0)
        ]
    for events in (batched, unbatched):
        assert isinstance(events[-1], Complete)
        streamed = "".join(e.text for e in events if isinstance(e, Token))
        assert streamed == events[-1].text and streamed.split() == words
    batched_tokens = [e for e in batched if isinstance(e, Token)]
    assert len([e for e in unbatched if isinstance(e, Token)]) >= 200
    # ~0.2 s of streaming in 0.1 s batches: a handful of events, the first of them a single word.
    assert 2 <= len(batched_tokens) <= 10, len(batched_tokens)
    assert batched_tokens[0].text.split() == ["w0"]
