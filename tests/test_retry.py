"""The retry policy: what is retried, how long it waits, and that nothing is retried after the first token."""

from __future__ import annotations

import httpx
import openai
import pytest

from core.retry import RetryPolicy, StreamFailed, classify, stream_with_retries


def _status_error(cls: type[openai.APIStatusError], status: int, headers: dict[str, str] | None = None):
    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx.Response(status, headers=headers or {}, request=request)
    return cls("failure", response=response, body=None)


def test_rate_limit_is_retryable_and_honours_retry_after() -> None:
    kind = classify(_status_error(openai.RateLimitError, 429, {"retry-after": "7"}))
    assert kind.code == "rate_limited" and kind.retryable and kind.retry_after == 7.0
    assert RetryPolicy().delay(0, kind) == 7.0


def test_server_errors_and_timeouts_are_retryable_but_bad_requests_are_not() -> None:
    assert classify(_status_error(openai.InternalServerError, 503)).retryable
    assert classify(openai.APITimeoutError(httpx.Request("POST", "http://x"))).code == "timeout"
    assert not classify(_status_error(openai.BadRequestError, 400)).retryable
    assert not classify(ValueError("bug")).retryable


def test_backoff_doubles_from_one_second() -> None:
    kind = classify(_status_error(openai.InternalServerError, 500))
    assert [RetryPolicy().delay(attempt, kind) for attempt in range(3)] == [1.0, 2.0, 4.0]


async def test_failures_before_the_first_token_are_retried_with_backoff() -> None:
    calls, waits = [], []

    async def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise _status_error(openai.InternalServerError, 500)
        yield "hello"

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    pieces: list[str] = []
    text = await stream_with_retries(flaky, RetryPolicy(), pieces.append, sleep)
    assert pieces == ["hello"] and text == "hello" and len(calls) == 3 and waits == [1.0, 2.0]


async def test_gives_up_after_three_retries() -> None:
    waits = []

    async def always_busy():
        raise _status_error(openai.RateLimitError, 429)
        yield ""  # pragma: no cover

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    with pytest.raises(StreamFailed) as failure:
        await stream_with_retries(always_busy, RetryPolicy(), lambda piece: None, sleep)
    assert failure.value.kind.code == "rate_limited" and waits == [1.0, 2.0, 4.0]


async def test_no_retry_after_the_first_token_and_partial_text_is_kept() -> None:
    calls = []

    async def drops_midway():
        calls.append(1)
        yield "Half an "
        yield "answer"
        raise httpx.ReadError("connection lost")

    async def sleep(seconds: float) -> None:  # pragma: no cover - must not be called
        raise AssertionError("retried after tokens were streamed")

    received = []
    with pytest.raises(StreamFailed) as failure:
        await stream_with_retries(drops_midway, RetryPolicy(), received.append, sleep)
    assert len(calls) == 1 and failure.value.partial == "Half an answer" == "".join(received)


async def test_one_timer_bounds_a_whole_stream_not_one_per_piece() -> None:
    """The budget is one timer per attempt: a timer per streamed piece was a heap push and a cancel per token."""
    import asyncio

    loop = asyncio.get_running_loop()
    timers = 0
    original = loop.call_at

    def counted(*args, **kwargs):
        nonlocal timers
        timers += 1
        return original(*args, **kwargs)

    async def many():
        for i in range(300):
            yield f"w{i} "
            if i % 50 == 0:
                await asyncio.sleep(0)

    async def no_sleep(seconds: float) -> None:  # pragma: no cover - nothing fails
        raise AssertionError("retried")

    received: list[str] = []
    loop.call_at = counted  # type: ignore[method-assign]
    try:
        text = await stream_with_retries(many, RetryPolicy(budget_s=30), received.append, no_sleep)
    finally:
        loop.call_at = original  # type: ignore[method-assign]
    assert len(received) == 300 and text == "".join(received)
    assert timers <= 2, f"{timers} timers for 300 pieces"


async def test_a_timeout_of_the_client_itself_is_not_the_budget() -> None:
    """Only the budget's own timer becomes `BudgetExceeded` (final); the client's read timeout stays a retryable
    `timeout` and is retried within the budget."""
    import asyncio

    calls, waits = [], []

    async def read_times_out():
        calls.append(1)
        if len(calls) == 1:
            raise asyncio.TimeoutError("read timeout")
        yield "ok"

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    received: list[str] = []
    assert await stream_with_retries(read_times_out, RetryPolicy(budget_s=30), received.append, sleep) == "ok"
    assert waits == [1.0] and received == ["ok"]
