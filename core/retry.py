"""Retrying language-model calls: when it is safe, how long to wait, and what the user is told otherwise.

Only failures before the first token are retried: once a user has seen words, a retry would repeat or
contradict them. The waits are 1 s, 2 s, 4 s (at most three retries), or what the server's `Retry-After` asks
for when it says so. `sleep` is injected so tests run without waiting.

One time budget covers a call and all its retries (`RetryPolicy.budget_s`, ANSWER_TIMEOUT_S): without it a hung
model kept a user waiting (max_retries + 1) x LLM_TIMEOUT_S plus the back-off. Past the budget the call fails
as `timeout` (the readable "took too long" message), and a retry whose wait would end past it is not started.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx
import openai

try:  # the openai SDK's own HTTP stack (httpx2): a stream cut mid-answer raises its errors unwrapped
    import httpx2

    _TIMEOUTS: tuple[type[BaseException], ...] = (asyncio.TimeoutError, httpx.TimeoutException, httpx2.TimeoutException)
    _TRANSPORT: tuple[type[BaseException], ...] = (httpx.TransportError, httpx2.TransportError, ConnectionError)
except ImportError:  # an SDK still on httpx
    _TIMEOUTS = (asyncio.TimeoutError, httpx.TimeoutException)
    _TRANSPORT = (httpx.TransportError, ConnectionError)

log = logging.getLogger(__name__)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
MAX_RETRY_AFTER_S = 30.0
# The deadline (loop time) of the answer being generated, set once per turn (`RetryPolicy.answer_deadline`), so
# the router's model call and the agent's share one budget; the graph's node tasks inherit it.
ANSWER_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("answer_deadline", default=None)


class BudgetExceeded(TimeoutError):
    """The call's overall time budget (`RetryPolicy.budget_s`) ran out; never retried."""


@dataclass(frozen=True, slots=True)
class FailureKind:
    """What went wrong, in a form both the retry loop and the user-facing message can use."""

    code: str  # rate_limited | llm_unavailable | timeout | internal
    retryable: bool
    retry_after: float | None = None


USER_MESSAGES: dict[str, str] = {
    "rate_limited": "The language model is busy right now (rate limited). Please try again in a minute.",
    "llm_unavailable": "I couldn't reach the language model just now. Please try again in a few minutes.",
    "timeout": "The language model took too long to answer. Please try again.",
    "internal": "Something went wrong on our side while answering. Please try again.",
    "interrupted": "The answer was interrupted before it finished. Please ask again.",
    "unavailable": "I can't answer right now: a service I depend on is unavailable. Please try again in a minute.",
}


def _retry_after(exc: openai.APIStatusError) -> float | None:
    headers = getattr(exc.response, "headers", None) or {}
    for name in ("retry-after-ms", "retry-after"):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw)
        except ValueError:
            continue
        return min(value / 1000.0 if name.endswith("ms") else value, MAX_RETRY_AFTER_S)
    return None


def _refused(exc: BaseException) -> bool:
    """Whether a "timeout" is really a refused connection.

    The aiohttp transport of the openai SDK maps every `aiohttp.ClientConnectionError`, a refused connection
    included, to `ConnectTimeout`; the `ConnectionRefusedError` under it says the server is down, not slow."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ConnectionRefusedError):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def classify(exc: BaseException) -> FailureKind:
    """Map an exception from the OpenAI client (or the network under it) to a `FailureKind`."""
    if isinstance(exc, BudgetExceeded):
        return FailureKind("timeout", False)
    if isinstance(exc, openai.RateLimitError):
        return FailureKind("rate_limited", True, _retry_after(exc))
    if (isinstance(exc, openai.APITimeoutError) or isinstance(exc, _TIMEOUTS)) and not _refused(exc):
        return FailureKind("timeout", True)
    if isinstance(exc, openai.APIConnectionError) or isinstance(exc, _TRANSPORT):
        return FailureKind("llm_unavailable", True)
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500:
            return FailureKind("llm_unavailable", True, _retry_after(exc))
        return FailureKind("llm_unavailable", False)
    if type(exc) is openai.APIError:  # the model's server reported an error inside its stream
        return FailureKind("llm_unavailable", True)
    return FailureKind("internal", False)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 3
    base_delay_s: float = 1.0
    budget_s: float | None = None  # one deadline for a call and its retries; None = no overall limit

    def deadline(self) -> float | None:
        """The loop time by which a call started now must be done: the turn's deadline when one is set."""
        turn = ANSWER_DEADLINE.get()
        if turn is not None:
            return turn
        return None if self.budget_s is None else asyncio.get_running_loop().time() + self.budget_s

    def start_answer(self) -> contextvars.Token[float | None] | None:
        """Start the turn's budget (the orchestrator, before it runs the graph); `end_answer` with the token."""
        if self.budget_s is None:
            return None
        return ANSWER_DEADLINE.set(asyncio.get_running_loop().time() + self.budget_s)

    @staticmethod
    def end_answer(token: contextvars.Token[float | None] | None) -> None:
        if token is not None:
            with contextlib.suppress(ValueError):  # finalised in another context (a generator closed late)
                ANSWER_DEADLINE.reset(token)

    def fits(self, deadline: float | None, wait: float) -> bool:
        """Whether a retry after `wait` seconds would still start before the deadline."""
        return deadline is None or asyncio.get_running_loop().time() + wait < deadline

    def delay(self, attempt: int, kind: FailureKind) -> float:
        """Wait before retry number `attempt` (0-based): 1, 2, 4 s, or the server's Retry-After if given."""
        if kind.retry_after is not None:
            return kind.retry_after
        return self.base_delay_s * (2**attempt)


class StreamFailed(Exception):
    """A streamed call failed for good. `partial` is what had already been streamed (kept for the user)."""

    def __init__(self, kind: FailureKind, partial: str, cause: BaseException) -> None:
        super().__init__(f"{kind.code}: {cause!r}")
        self.kind = kind
        self.partial = partial
        self.cause = cause


async def stream_with_retries(
    start: Callable[[], AsyncIterator[str]],
    policy: RetryPolicy,
    on_piece: Callable[[str], None],
    sleep: Sleep = asyncio.sleep,
    *,
    log_context: str = "",
) -> str:
    """Hand each text piece of `start()` to `on_piece`, retrying failures that happen before the first piece;
    returns the whole text.

    Raises `StreamFailed` when retries are exhausted, the failure is not retryable, or it happened mid-stream.
    Pushed to `on_piece` rather than yielded, so that one timer bounds a whole attempt by the deadline: a timer
    around each piece (`asyncio.timeout_at` per `__anext__`) was a heap push and a cancel per streamed token, and
    a timeout cannot be held open across an async generator's `yield` (its cancellation would land in the
    reader's code, not here).
    """
    attempt = 0
    deadline = policy.deadline()
    while True:
        produced: list[str] = []
        stream = start()
        try:
            async with _bounded(deadline):
                async for piece in stream:
                    produced.append(piece)
                    on_piece(piece)
            return "".join(produced)
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:  # noqa: BLE001 - classified below; unknown errors are not retried
            kind = classify(exc)
            partial = "".join(produced)
            wait = policy.delay(attempt, kind)
            if produced or not kind.retryable or attempt >= policy.max_retries or not policy.fits(deadline, wait):
                log.warning("LLM stream failed for good (%s) %s after %d retries: %r",
                            kind.code, log_context, attempt, exc)
                raise StreamFailed(kind, partial, exc) from exc
            log.info("LLM call failed (%s) %s; retry %d in %.1fs", kind.code, log_context, attempt + 1, wait)
            attempt += 1
            await sleep(wait)
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()


@contextlib.asynccontextmanager
async def _bounded(deadline: float | None) -> AsyncIterator[None]:
    """The block, cut off at `deadline` (loop time) with `BudgetExceeded`; a `TimeoutError` of its own (a read
    timeout of the client) stays what it is."""
    if deadline is None:
        yield
        return
    try:
        async with asyncio.timeout_at(deadline) as bound:
            yield
    except TimeoutError as exc:
        if bound.expired():
            raise BudgetExceeded("the answer's time budget ran out") from exc
        raise


async def _within(deadline: float | None, awaitable: Awaitable[T]) -> T:
    """`awaitable`, cut off at `deadline` (loop time) with `BudgetExceeded`."""
    async with _bounded(deadline):
        return await awaitable


async def call_with_retries(
    call: Callable[[], Awaitable[T]], policy: RetryPolicy, sleep: Sleep = asyncio.sleep, *, log_context: str = ""
) -> T:
    """Same policy for a non-streamed call (the router's structured decision)."""
    attempt = 0
    deadline = policy.deadline()
    while True:
        try:
            return await _within(deadline, call())
        except Exception as exc:  # noqa: BLE001
            kind = classify(exc)
            wait = policy.delay(attempt, kind)
            if not kind.retryable or attempt >= policy.max_retries or not policy.fits(deadline, wait):
                raise StreamFailed(kind, "", exc) from exc
            log.info("LLM call failed (%s) %s; retry %d in %.1fs", kind.code, log_context, attempt + 1, wait)
            attempt += 1
            await sleep(wait)
