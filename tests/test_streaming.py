"""The streaming renderer in virtual time: a scripted event source, an in-memory surface, no real sleeping.

`VirtualTime` and `MemorySurface` are meant for reuse by the front-end tests:

    async def test_x(vtime):                         # the fixture below
        surface = MemorySurface(vtime, max_chars=2000, latency=0.2)
        outcome = await StreamingReply(surface, EditPacer(1.0), clock=vtime.clock, sleep=vtime.sleep).run(events)
        surface.calls   # [(time, "post"|"edit", message index, text), ...]
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bots.pacing import Budget, EditBudget, EditPacer
from bots.splitting import open_fence
from bots.streaming import StreamingReply
from bots.surface import AgentTag, MessageTooLong, RateLimited, ReplyView, SurfaceGone, render_plain
from core.events import Agent, Complete, Error, Event, SourceRef, Sources, Start, Token
from core.retry import USER_MESSAGES

MARKER = "▌"


class VirtualTime:
    """Virtual time for asyncio: `sleep` parks the caller; when every task is idle, time jumps to the earliest
    wake-up. Concurrent sleeps overlap as real ones do, and a 10-minute scenario runs in milliseconds.
    Use one per event loop (two drivers would keep each other from ever seeing the loop idle)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0
        self._driver: asyncio.Task[None] | None = None
        self._pushed = asyncio.Event()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if self._driver is None:
            self._driver = asyncio.create_task(self._drive())
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._sleepers, (self.now + max(seconds, 0.0), self._seq, future))
        self._pushed.set()
        await future

    async def _settle(self) -> None:
        """Yield until no other callback is ready to run (the loop is idle but for timers and I/O)."""
        loop = asyncio.get_running_loop()
        quiet = 0
        while quiet < 3:
            await asyncio.sleep(0)
            ready = getattr(loop, "_ready", None)
            quiet = quiet + 1 if ready is None or not ready else 0

    async def _drive(self) -> None:
        while True:
            await self._settle()
            while self._sleepers and self._sleepers[0][2].done():  # cancelled sleeps
                heapq.heappop(self._sleepers)
            if not self._sleepers:
                self._pushed.clear()
                await self._pushed.wait()
                continue
            wake, _, future = heapq.heappop(self._sleepers)
            self.now = max(self.now, wake)
            future.set_result(None)

    def stop(self) -> None:
        if self._driver is not None:
            self._driver.cancel()


@pytest.fixture
async def vtime() -> AsyncIterator[VirtualTime]:
    time = VirtualTime()
    yield time
    time.stop()


class MemorySurface:
    """An in-memory chat: records every post and edit with its virtual time; failures can be scripted.

    `latency` makes each call take that long (virtual), so edits are in flight while tokens keep coming.
    `fail_next(*exceptions)` makes the next calls raise those; `refuse_over` simulates a platform whose real
    limit is lower than `max_chars` claims (it raises MessageTooLong)."""

    def __init__(self, time: VirtualTime, max_chars: int = 4000, latency: float = 0.0,
                 refuse_over: int | None = None, sanitize: Callable[[str], str] | None = None,
                 with_finalize: bool = False, budget: Budget | None = None) -> None:
        self.time = time
        self.budget = budget
        self.max_chars = max_chars
        self.latency = latency
        self.refuse_over = refuse_over
        self.messages: list[str] = []
        self.calls: list[tuple[float, str, int, str]] = []
        self.failures: list[Exception] = []
        self.finalized: list[tuple[int, ReplyView, str]] = []
        self._sanitize = sanitize or (lambda s: s)
        if with_finalize:
            self.finalize = self._finalize

    def render(self, view: ReplyView) -> str:
        return render_plain(view, sanitize=self._sanitize)

    def budget_for(self, write: str) -> Budget | None:
        return self.budget

    def fail_next(self, *exceptions: Exception) -> None:
        self.failures.extend(exceptions)

    async def _call(self, text: str) -> None:
        if self.latency:
            await self.time.sleep(self.latency)
        if self.failures:
            raise self.failures.pop(0)
        if len(text) > (self.refuse_over or self.max_chars):
            raise MessageTooLong()
        assert text.strip(), "platforms refuse empty messages"

    async def post(self, text: str) -> int:
        await self._call(text)
        self.messages.append(text)
        self.calls.append((self.time.now, "post", len(self.messages) - 1, text))
        return len(self.messages) - 1

    async def edit(self, handle: int, text: str) -> None:
        await self._call(text)
        self.messages[handle] = text
        self.calls.append((self.time.now, "edit", handle, text))

    async def _finalize(self, handle: int, view: ReplyView) -> None:
        self.finalized.append((handle, view, self.messages[handle]))

    def edits_of(self, handle: int) -> list[str]:
        return [text for _, kind, index, text in self.calls if index == handle]


def answer_events(time: VirtualTime, tokens: list[str], *, gap: float = 0.05, agent: str = "billing",
                  end: str = "complete", sources: bool = True, route_after: float = 0.05,
                  yielded_at: list[float] | None = None, complete_text: str | None = None
                  ) -> AsyncIterator[Event]:
    """A scripted core: Start, Agent after `route_after`, one token every `gap`, then the terminal event."""

    async def events() -> AsyncIterator[Event]:
        yield Start("slack:T1:C1:1.0")
        await time.sleep(route_after)
        yield Agent(agent, agent.capitalize(), "test")
        for token in tokens:
            await time.sleep(gap)
            if yielded_at is not None:
                yielded_at.append(time.now)
            yield Token(token)
        if sources:
            yield Sources((SourceRef("Plans and pricing", "billing/plans-and-pricing.md"),
                           SourceRef("Refunds", "billing/refunds.md")))
        if end == "complete":
            yield Complete(agent, 1.0, text="".join(tokens) if complete_text is None else complete_text)
        elif end == "error":
            yield Error("llm_unavailable", USER_MESSAGES["llm_unavailable"], "".join(tokens))
        elif end == "raise":
            raise RuntimeError("core exploded")

    return events()


def reply_for(surface: MemorySurface, time: VirtualTime, interval: float = 1.0, **kwargs: Any) -> StreamingReply:
    return StreamingReply(surface, EditPacer(interval), clock=time.clock, sleep=time.sleep, **kwargs)


# --- placeholder, agent, first token ----------------------------------------------------------------------


async def test_placeholder_is_posted_first_and_the_agent_tag_comes_with_the_first_words(vtime: VirtualTime) -> None:
    surface = MemorySurface(vtime)
    outcome = await reply_for(surface, vtime).run(answer_events(vtime, ["Hello ", "there."], route_after=0.3))
    first_time, kind, _, text = surface.calls[0]
    assert kind == "post" and text == "_Thinking…_" and first_time == 1000.0
    tagged = surface.calls[1]  # no edit of its own for the tag: it goes in with the first words
    assert tagged[3] == "*Billing*\nHello ▌" and tagged[0] == pytest.approx(1000.35)
    assert outcome.placeholder_at == 1000.0 and outcome.agent == "billing"


async def test_a_model_slow_to_start_gets_the_agent_tag_shown_on_its_own(vtime: VirtualTime) -> None:
    surface = MemorySurface(vtime)
    await reply_for(surface, vtime).run(answer_events(vtime, ["Hello ", "there."], route_after=0.1, gap=2.0))
    assert [c[3] for c in surface.calls[:2]] == ["_Thinking…_", "*Billing* _is looking into it…_"]
    assert surface.calls[1][0] == pytest.approx(1000.1 + 1.0)  # after the grace for the first words


async def test_first_token_is_visible_without_waiting_for_the_pacing_interval(vtime: VirtualTime) -> None:
    surface = MemorySurface(vtime)
    yielded_at: list[float] = []
    outcome = await reply_for(surface, vtime, interval=1.0).run(
        answer_events(vtime, ["Hello ", "world"], gap=0.1, route_after=0.02, yielded_at=yielded_at))
    # The placeholder went out at t, yet the first token (t+0.12) is not held until t+1.
    assert outcome.first_token_at == pytest.approx(yielded_at[0])
    assert outcome.first_token_received_at == pytest.approx(yielded_at[0])
    assert "Hello" in surface.calls[1][3] and surface.calls[1][0] == pytest.approx(yielded_at[0])


class TypingSurface(MemorySurface):
    """A surface with a typing indicator, which lets the first write wait briefly for words (as Discord's)."""

    first_write_wait_s = 0.4

    def __init__(self, time: VirtualTime, **kwargs: Any) -> None:
        super().__init__(time, **kwargs)
        self.typed_at: list[float] = []

    async def typing(self) -> None:
        self.typed_at.append(self.time.now)


async def test_with_a_typing_indicator_the_first_write_carries_words_not_a_placeholder(vtime: VirtualTime) -> None:
    surface = TypingSurface(vtime)
    outcome = await reply_for(surface, vtime).run(answer_events(vtime, ["Hello ", "there."], route_after=0.1))
    assert surface.typed_at == [1000.0]
    assert surface.calls[0][1] == "post" and surface.calls[0][3] == "*Billing*\nHello ▌"
    assert surface.calls[0][0] == pytest.approx(1000.15) and outcome.placeholder_at == pytest.approx(1000.15)


async def test_with_a_typing_indicator_a_placeholder_still_comes_when_no_words_do(vtime: VirtualTime) -> None:
    surface = TypingSurface(vtime)
    await reply_for(surface, vtime).run(answer_events(vtime, ["Hello"], route_after=0.1, gap=3.0))
    assert surface.calls[0][3] == "*Billing* _is looking into it…_" and surface.calls[0][0] == pytest.approx(1000.4)


# --- pacing and merging -------------------------------------------------------------------------------------


async def test_edits_are_paced_to_one_a_second_and_the_final_text_is_exact(vtime: VirtualTime) -> None:
    surface = MemorySurface(vtime)
    tokens = [f"t{i} " for i in range(200)]  # 200 tokens over 10 simulated seconds
    outcome = await reply_for(surface, vtime, interval=1.0).run(answer_events(vtime, tokens, gap=0.05))
    # routed + first text + one a second for ~10 s + the final edit
    assert 10 <= outcome.edits <= 13, outcome.edits
    assert outcome.posts == 1 and outcome.delivered and outcome.status == "done"
    text_edits = [t for t, kind, _, text in surface.calls if kind == "edit" and "t0" in text]
    gaps = [b - a for a, b in zip(text_edits, text_edits[1:-1])]  # the final edit is not paced
    assert all(gap >= 1.0 - 1e-9 for gap in gaps)
    expected = "*Billing*\n" + "".join(tokens).strip() + "\n\n_Sources: Plans and pricing, Refunds_"
    assert surface.messages == [expected] and outcome.texts == [expected]


async def test_no_edit_ever_repeats_the_text_already_shown(vtime: VirtualTime) -> None:
    surface = MemorySurface(vtime)
    tokens = ["a", "", "b", " ", "c"]  # an empty token changes nothing
    await reply_for(surface, vtime, interval=0.0).run(answer_events(vtime, tokens, gap=0.3, sources=False))
    texts = [text for _, _, _, text in surface.calls]
    assert all(a != b for a, b in zip(texts, texts[1:]))


async def test_a_slow_platform_never_holds_back_the_event_stream(vtime: VirtualTime) -> None:
    surface = MemorySurface(vtime, latency=0.8)  # every call takes 0.8 s
    yielded_at: list[float] = []
    tokens = [f"w{i} " for i in range(100)]
    outcome = await reply_for(surface, vtime, interval=1.0).run(
        answer_events(vtime, tokens, gap=0.01, route_after=0.0, yielded_at=yielded_at))
    # The script asked for a token every 10 ms; the consumer took each one on time despite 0.8 s edits.
    assert yielded_at[-1] - yielded_at[0] == pytest.approx(0.99)
    assert outcome.edits <= 4 and "".join(tokens).strip() in surface.messages[0]


# --- 429s -----------------------------------------------------------------------------------------------------


async def test_pending_tokens_are_merged_into_one_edit_after_a_429(vtime: VirtualTime) -> None:
    surface = MemorySurface(vtime)
    tokens = [f"x{i} " for i in range(40)]
    reply = reply_for(surface, vtime, interval=0.5)

    async def limited_once() -> AsyncIterator[Event]:
        async for event in answer_events(vtime, tokens, gap=0.1, sources=False):
            if isinstance(event, Token) and event.text == "x10 ":
                surface.fail_next(RateLimited(2.0))
            yield event

    outcome = await reply.run(limited_once())
    assert outcome.rate_limited == 1
    # After the refused edit nothing is sent for 2 s; then one edit carries all that arrived meanwhile.
    refused_at = next(t for t, _, _, text in surface.calls if "x9" in text and "x10" not in text)
    after = [(t, text) for t, kind, _, text in surface.calls if t > refused_at]
    assert after[0][0] >= refused_at + 2.0 - 1e-9
    assert after[0][1].count("x") - 1 >= 20  # ~2 s of tokens merged into that one edit
    assert outcome.delivered and "x39" in surface.messages[0]


async def test_text_refused_by_a_429_is_retried_without_waiting_for_more_tokens(vtime: VirtualTime) -> None:
    surface = MemorySurface(vtime)

    async def events() -> AsyncIterator[Event]:
        yield Start("k")
        yield Agent("billing", "Billing")
        await vtime.sleep(0.5)
        surface.fail_next(RateLimited(2.0))
        yield Token("Your invoice is ready.")
        await vtime.sleep(30)  # the core goes quiet (a slow tool call)
        yield Complete("billing", 1.0, text="Your invoice is ready.")

    started = vtime.now
    await reply_for(surface, vtime).run(events())
    shown = next(t for t, _, _, text in surface.calls if "invoice" in text)
    assert shown - started == pytest.approx(0.5 + 2.0)


async def test_final_text_lands_after_429_on_the_last_edit(vtime: VirtualTime) -> None:
    surface = MemorySurface(vtime)

    async def events() -> AsyncIterator[Event]:
        yield Start("k")
        yield Agent("billing", "Billing")
        yield Token("Almost ")
        await vtime.sleep(2)
        surface.fail_next(RateLimited(3.0), RateLimited(1.5))  # the final edit is refused twice
        yield Token("done.")
        yield Complete("billing", 1.0, text="Almost done.")

    started = vtime.now
    outcome = await reply_for(surface, vtime).run(events())
    assert outcome.delivered and outcome.rate_limited == 2
    assert surface.messages == ["*Billing*\nAlmost done."]
    assert vtime.now - started >= 2 + 3.0 + 1.5 - 1e-9  # each Retry-After was honoured


async def test_final_text_abandoned_after_the_cap_is_reported(vtime: VirtualTime) -> None:
    surface = MemorySurface(vtime)

    async def events() -> AsyncIterator[Event]:
        yield Start("k")
        yield Token("Never shown")
        await vtime.sleep(0.5)
        surface.fail_next(*[RateLimited(1.0)] * 50)
        yield Complete("billing", 1.0)

    outcome = await reply_for(surface, vtime, final_attempts=4).run(events())
    assert not outcome.delivered and outcome.status == "done"
    assert MARKER in surface.messages[0]  # the platform never accepted the final edit


# --- length limit ---------------------------------------------------------------------------------------------


async def test_long_answer_continues_in_new_messages_each_within_the_limit(vtime: VirtualTime) -> None:
    surface = MemorySurface(vtime, max_chars=600)
    text = ("Intro paragraph for the answer.\n\n```python\n" + "\n".join(f"line_{i} = {i}" for i in range(120))
            + "\n```\n\nThat is the whole script. " + "Closing words here. " * 20)
    tokens = [text[i:i + 25] for i in range(0, len(text), 25)]
    outcome = await reply_for(surface, vtime, interval=0.5).run(answer_events(vtime, tokens, gap=0.02))
    assert len(surface.messages) >= 4 and outcome.delivered and outcome.posts == len(surface.messages)
    every_text_sent = [text for _, _, _, text in surface.calls]
    assert all(len(sent) <= 600 for sent in every_text_sent)  # rendered, tag and footer included
    for message in surface.messages:
        assert open_fence(message) is None and MARKER not in message
    assert surface.messages[0].startswith("*Billing*\n") and "_(continued below)_" in surface.messages[0]
    assert not surface.messages[1].startswith("*Billing*")
    assert "Sources: Plans and pricing" in surface.messages[-1]
    assert all("Sources" not in m for m in surface.messages[:-1])
    joined = "\n".join(surface.messages)
    assert all(f"line_{i} = {i}\n" in joined for i in range(120))
    # Once a message is finished it is not rewritten: each earlier message's final text was set once.
    for index in range(len(surface.messages) - 1):
        assert surface.edits_of(index).count(surface.messages[index]) == 1


async def test_split_is_measured_on_the_rendered_text(vtime: VirtualTime) -> None:
    # A sanitizer that doubles every "@" makes the rendered text longer than the Markdown body.
    surface = MemorySurface(vtime, max_chars=300, sanitize=lambda s: s.replace("@", "@@"))
    tokens = ["@team " * 10 for _ in range(12)]
    await reply_for(surface, vtime, interval=0.0).run(answer_events(vtime, tokens, gap=0.05))
    assert len(surface.messages) > 2
    assert all(len(text) <= 300 for _, _, _, text in surface.calls)
    assert sum(m.count("@@team") for m in surface.messages) == 120


async def test_message_too_long_is_cut_smaller_and_continues(vtime: VirtualTime) -> None:
    # The surface claims 1000 characters but the platform refuses anything over 700.
    surface = MemorySurface(vtime, max_chars=1000, refuse_over=700)
    tokens = [f"sentence number {i} is here. " for i in range(80)]
    outcome = await reply_for(surface, vtime, interval=0.2).run(answer_events(vtime, tokens, gap=0.02))
    assert outcome.delivered and len(surface.messages) >= 3
    assert all(len(m) <= 700 for m in surface.messages)
    joined = " ".join(surface.messages)
    assert all(f"sentence number {i} is here." in joined for i in range(80))


# --- endings ------------------------------------------------------------------------------------------------------


async def test_error_event_ends_the_message_with_the_partial_text_and_the_error(vtime: VirtualTime) -> None:
    surface = MemorySurface(vtime)
    outcome = await reply_for(surface, vtime).run(
        answer_events(vtime, ["Partial ", "answer"], end="error", sources=False))
    assert surface.messages == [f"*Billing*\nPartial answer\n\n⚠️ {USER_MESSAGES['llm_unavailable']}"]
    assert outcome.status == "error" and outcome.error_code == "llm_unavailable" and outcome.delivered


async def test_error_before_any_text_replaces_the_placeholder(vtime: VirtualTime) -> None:
    surface = MemorySurface(vtime)

    async def events() -> AsyncIterator[Event]:
        yield Start("k")
        await vtime.sleep(0.5)
        yield Error("timeout", USER_MESSAGES["timeout"])

    await reply_for(surface, vtime).run(events())
    assert surface.messages == [f"⚠️ {USER_MESSAGES['timeout']}"]


async def test_iterator_exception_becomes_a_readable_error(vtime: VirtualTime) -> None:
    surface = MemorySurface(vtime)
    outcome = await reply_for(surface, vtime).run(
        answer_events(vtime, ["Some ", "words"], end="raise", sources=False))
    assert surface.messages == [f"*Billing*\nSome words\n\n⚠️ {USER_MESSAGES['internal']}"]
    assert outcome.status == "error" and outcome.error_code == "internal" and outcome.delivered


async def test_stream_that_ends_without_a_terminal_event_is_an_error(vtime: VirtualTime) -> None:
    surface = MemorySurface(vtime)
    outcome = await reply_for(surface, vtime).run(answer_events(vtime, ["Half"], end="none", sources=False))
    assert USER_MESSAGES["internal"] in surface.messages[0] and MARKER not in surface.messages[0]
    assert outcome.status == "error"


async def test_cancellation_lands_an_interrupted_note_then_reraises(vtime: VirtualTime) -> None:
    surface = MemorySurface(vtime)
    reached = asyncio.Event()

    async def endless() -> AsyncIterator[Event]:
        yield Start("k")
        yield Agent("policy", "Policy")
        yield Token("Half an answer")
        await vtime.sleep(1.5)
        reached.set()
        await vtime.sleep(3600)
        yield Token("never")

    reply = reply_for(surface, vtime)
    task = asyncio.create_task(reply.run(endless()))
    await reached.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert surface.messages == [f"*Policy*\nHalf an answer\n\n⚠️ {USER_MESSAGES['interrupted']}"]
    assert reply.outcome.status == "interrupted" and reply.outcome.delivered


async def test_cancellation_during_a_slow_edit_waits_for_it_and_posts_nothing_twice(vtime: VirtualTime) -> None:
    surface = MemorySurface(vtime, latency=0.7)
    reached = asyncio.Event()

    async def endless() -> AsyncIterator[Event]:
        yield Start("k")
        yield Agent("policy", "Policy")
        for i in range(30):
            await vtime.sleep(0.05)
            yield Token(f"p{i} ")
        reached.set()
        await vtime.sleep(3600)
        yield Token("never")

    reply = reply_for(surface, vtime)
    task = asyncio.create_task(reply.run(endless()))
    await reached.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(surface.messages) == 1 and reply.outcome.posts == 1
    assert surface.messages[0].endswith(USER_MESSAGES["interrupted"]) and "p29" in surface.messages[0]


async def test_a_failing_typing_indicator_is_ignored(vtime: VirtualTime) -> None:
    surface = MemorySurface(vtime)
    typed: list[float] = []

    async def typing() -> None:
        typed.append(vtime.now)
        raise RuntimeError("typing endpoint down")

    surface.typing = typing  # type: ignore[attr-defined]
    outcome = await reply_for(surface, vtime).run(answer_events(vtime, ["Fine."], sources=False))
    assert typed == [1000.0] and outcome.delivered and surface.messages == ["*Billing*\nFine."]


async def test_finalize_runs_once_on_the_last_message_after_the_final_text(vtime: VirtualTime) -> None:
    surface = MemorySurface(vtime, max_chars=300, with_finalize=True)
    tokens = [f"word{i} " for i in range(120)]
    outcome = await reply_for(surface, vtime, interval=0.0).run(answer_events(vtime, tokens, gap=0.01))
    assert len(surface.finalized) == 1
    handle, view, text_then = surface.finalized[0]
    assert handle == outcome.handles[-1] and view.is_last_part and view.is_continuation
    assert view.status == "done" and text_then == surface.messages[-1] and "Sources" in text_then


class TextFinalizingSurface(MemorySurface):
    """A surface whose finalize sets the text itself (as Slack's does, with blocks)."""

    finalize_sets_text = True

    def __init__(self, time: VirtualTime, refuse: Exception | None = None) -> None:
        super().__init__(time, max_chars=4000)
        self.refuse = refuse
        self.finalize = self._finalize_with_text

    async def _finalize_with_text(self, handle: int, view: ReplyView) -> None:
        if self.refuse is not None:
            raise self.refuse
        await self.edit(handle, self.render(view))
        self.finalized.append((handle, view, self.messages[handle]))


async def test_a_finalize_that_sets_the_text_replaces_the_final_edit(vtime: VirtualTime) -> None:
    surface = TextFinalizingSurface(vtime)
    outcome = await reply_for(surface, vtime, interval=0.5).run(answer_events(vtime, [f"w{i} " for i in range(30)]))
    assert len(surface.finalized) == 1 and outcome.delivered
    final_calls = [c for c in surface.calls if "Sources" in c[3]]
    assert len(final_calls) == 1  # one call carried the final text: no separate edit before finalize
    assert surface.messages[-1] == final_calls[0][3] and "w29" in surface.messages[-1]


async def test_a_refused_finalize_still_lands_the_final_text(vtime: VirtualTime) -> None:
    surface = TextFinalizingSurface(vtime, refuse=RuntimeError("invalid_blocks"))
    outcome = await reply_for(surface, vtime).run(answer_events(vtime, [f"w{i} " for i in range(10)]))
    assert outcome.delivered and surface.finalized == []
    assert "w9" in surface.messages[-1] and "Sources" in surface.messages[-1] and "▌" not in surface.messages[-1]


async def test_two_replies_sharing_a_budget_never_exceed_it(vtime: VirtualTime) -> None:
    budget = EditBudget(5, 5.0, clock=vtime.clock, sleep=vtime.sleep)
    surfaces = [MemorySurface(vtime, max_chars=2000, latency=0.05, budget=budget) for _ in range(2)]
    replies = [StreamingReply(s, EditPacer(0.2), clock=vtime.clock, sleep=vtime.sleep) for s in surfaces]
    await asyncio.gather(*(r.run(answer_events(vtime, [f"w{i} " for i in range(80)], gap=0.1)) for r in replies))
    stamps = sorted(t for s in surfaces for t, *_ in s.calls)
    for start in stamps:
        assert sum(1 for t in stamps if start <= t < start + 5.0) <= 5
    assert all("w79" in s.messages[0] and MARKER not in s.messages[0] for s in surfaces)
    assert all(r.outcome.delivered for r in replies)


# --- the default renderer -------------------------------------------------------------------------------------


def test_render_plain_shows_marker_while_streaming_and_footer_when_done() -> None:
    agent = AgentTag("technical", "Technical")
    streaming = ReplyView(body="Retry with backoff", agent=agent, status="streaming")
    assert render_plain(streaming) == "*Technical*\nRetry with backoff ▌"
    done = ReplyView(body="Retry with backoff.", agent=agent, status="done",
                     sources=(SourceRef("Timeouts", "technical/timeouts.md"),))
    assert render_plain(done) == "*Technical*\nRetry with backoff.\n\n_Sources: Timeouts_"


def test_render_plain_closes_an_open_fence_while_streaming_and_puts_the_marker_below() -> None:
    view = ReplyView(body="Try:\n```bash\ncurl -v", status="streaming")
    assert render_plain(view) == "Try:\n```bash\ncurl -v\n```\n▌"


def test_render_plain_sanitizes_body_and_titles_and_marks_continuations() -> None:
    view = ReplyView(body="ping @everyone", status="done", sources=(SourceRef("@here doc", "x.md"),),
                     agent=AgentTag("policy", "Policy"), is_continuation=True)
    text = render_plain(view, sanitize=lambda s: s.replace("@", "@\u200b"), bold=lambda s: f"**{s}**")
    assert text == "ping @\u200beveryone\n\n_Sources: @\u200bhere doc_"
    middle = ReplyView(body="part two", status="streaming", is_continuation=True, is_last_part=False)
    assert render_plain(middle) == "part two\n_(continued below)_"


def test_render_plain_never_leaves_an_empty_answer_looking_busy() -> None:
    view = ReplyView(body="", agent=AgentTag("billing", "Billing"), status="done")
    assert render_plain(view) == "*Billing*\n_(no answer)_"


async def test_a_channel_that_is_gone_stops_the_reply_at_once(vtime: VirtualTime) -> None:
    surface = MemorySurface(vtime)
    started = vtime.now
    reply = reply_for(surface, vtime, interval=0.2)

    async def gone_after_placeholder():
        async for event in answer_events(vtime, [f"w{i} " for i in range(20)]):
            if isinstance(event, Agent):
                surface.fail_next(*(SurfaceGone("channel_not_found") for _ in range(50)))
            yield event

    outcome = await reply.run(gone_after_placeholder())
    assert outcome.posts == 1 and not outcome.delivered
    assert len(surface.failures) == 49  # one attempt, then nothing more was tried
    assert vtime.now - started < 5  # no minutes of back-off for a channel that no longer exists


class TwoBudgetSurface(MemorySurface):
    """A surface whose posts and edits spend different budgets (as Slack's do: posts per channel, edits per
    workspace)."""

    def __init__(self, time: VirtualTime, posts: Budget, edits: Budget) -> None:
        super().__init__(time)
        self.posts, self.edits = posts, edits

    def budget_for(self, write: str) -> Budget | None:
        return self.posts if write == "post" else self.edits


async def test_a_429_is_fed_to_the_budget_the_write_spent_so_other_replies_hold_back(vtime: VirtualTime) -> None:
    posts = EditBudget(10, 1.0, clock=vtime.clock, sleep=vtime.sleep)
    edits = EditBudget(10, 1.0, clock=vtime.clock, sleep=vtime.sleep)
    hit = TwoBudgetSurface(vtime, posts, edits)
    bystander = TwoBudgetSurface(vtime, posts, edits)

    async def limited_after_routing() -> AsyncIterator[Event]:
        async for event in answer_events(vtime, [f"w{i} " for i in range(5)], gap=0.1):
            if isinstance(event, Agent):
                hit.fail_next(RateLimited(4.0))  # the agent-tag edit is refused
            yield event

    async def bystander_later() -> AsyncIterator[Event]:
        await vtime.sleep(0.5)  # starts while the workspace is blocked
        async for event in answer_events(vtime, ["late "], gap=0.1):
            yield event

    first, second = (reply_for(hit, vtime), reply_for(bystander, vtime))
    blocked_from = vtime.now + 0.05
    await asyncio.gather(first.run(limited_after_routing()), second.run(bystander_later()))
    assert first.outcome.rate_limited == 1 and edits.blocked_until >= blocked_from + 4.0
    assert posts.blocked_until == 0  # posts were not refused: that budget did not learn of it
    bystander_edits = [t for t, kind, *_ in bystander.calls if kind == "edit"]
    assert bystander_edits and min(bystander_edits) >= blocked_from + 4.0  # the other reply's edits waited
    assert [t for t, kind, *_ in bystander.calls if kind == "post"][0] < blocked_from + 1.0  # its post did not
    assert first.outcome.delivered and second.outcome.delivered


# --- every write counts (a shared window of 5 writes per 5 s, as Discord's) ------------------------------------


async def test_a_single_reply_keeps_a_write_in_reserve_so_its_final_text_lands_at_once(vtime: VirtualTime) -> None:
    budget = EditBudget(5, 5.0, clock=vtime.clock, sleep=vtime.sleep)
    surface = TypingSurface(vtime, latency=0.03, budget=budget)
    yielded_at: list[float] = []
    tokens = [f"w{i} " for i in range(150)]  # 50 tokens a second for 3 s, as the benchmark's model
    outcome = await reply_for(surface, vtime).run(
        answer_events(vtime, tokens, gap=0.02, route_after=0.2, yielded_at=yielded_at))
    assert outcome.delivered and "w149" in surface.messages[0] and MARKER not in surface.messages[0]
    assert outcome.final_at - yielded_at[-1] <= 0.1  # not a window's wait after the model is done
    stamps = [t for t, *_ in surface.calls]
    assert all(sum(1 for t in stamps if start <= t < start + 5.0) <= 5 for start in stamps)
    assert outcome.posts == 1 and outcome.edits >= 3  # progress was still shown while it streamed


async def test_under_a_burst_replies_showing_nothing_go_before_progress_and_finish_within_three_windows(
        vtime: VirtualTime) -> None:
    budget = EditBudget(5, 5.0, clock=vtime.clock, sleep=vtime.sleep)
    surfaces = [TypingSurface(vtime, latency=0.03, budget=budget) for _ in range(10)]
    replies = [reply_for(s, vtime) for s in surfaces]
    started = vtime.now
    await asyncio.gather(*(r.run(answer_events(vtime, [f"w{i} " for i in range(150)], gap=0.02, route_after=0.2))
                           for r in replies))
    first_text = sorted(r.outcome.first_token_at - started for r in replies)
    assert (first_text[4] + first_text[5]) / 2 <= 5.5  # half the readers see words within about one window
    assert max(r.outcome.final_at for r in replies) - started <= 15.5
    stamps = sorted(t for s in surfaces for t, *_ in s.calls)
    assert all(sum(1 for t in stamps if start <= t < start + 5.0) <= 5 for start in stamps)
    assert all(r.outcome.delivered and "w149" in s.messages[0] and MARKER not in s.messages[0]
               for r, s in zip(replies, surfaces))


class FinalPostingSurface(TextFinalizingSurface):
    """A surface that can post a message already final with its extras (as Slack's and Discord's can)."""

    def __init__(self, time: VirtualTime, budget: Budget) -> None:
        super().__init__(time)
        self.budget = budget
        self.final_posts: list[str] = []

    async def post_final(self, view: ReplyView) -> int:
        handle = await self.post(self.render(view))
        self.final_posts.append(self.messages[handle])
        return handle


async def test_a_reply_whose_answer_ended_while_it_queued_posts_its_final_text_and_extras_at_once(
        vtime: VirtualTime) -> None:
    budget = EditBudget(1, 5.0, clock=vtime.clock, sleep=vtime.sleep)
    await budget.acquire()  # someone else's write fills the window for 5 s
    surface = FinalPostingSurface(vtime, budget)
    outcome = await reply_for(surface, vtime).run(answer_events(vtime, ["Short ", "answer."], gap=0.1))
    assert outcome.delivered and outcome.posts == 1 and outcome.edits == 0  # one write in all
    assert surface.final_posts == surface.messages and "Sources" in surface.messages[0]
    assert surface.calls[0][0] >= 1005.0 and surface.finalized == []  # no finalize edit after the post
