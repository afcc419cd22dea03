"""The streaming renderer, the splitter and the pacing maths, with a fake clock and an in-memory surface."""

from __future__ import annotations

import asyncio
import heapq
import random

import pytest

from bots.pacing import EditBudget, EditPacer
from bots.splitting import open_fence, split_markdown
from bots.streaming import MessageTooLong, RateLimited, ReplyView, StreamingReply, render_plain
from core.events import Agent, Complete, Error, SourceRef, Sources, Start, Token


class FakeTime:
    """Virtual time: `sleep` parks the caller until a driver task moves the clock to its wake-up time.

    The driver advances only when every other task has had a chance to run, so concurrent sleeps overlap the
    way real ones do, and no test waits for real seconds."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0
        self._driver: asyncio.Task[None] | None = None

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if self._driver is None:
            self._driver = asyncio.create_task(self._drive())
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._sleepers, (self.now + max(seconds, 0.0), self._seq, future))
        await future

    async def _drive(self) -> None:
        while True:
            for _ in range(50):
                await asyncio.sleep(0)
            if not self._sleepers:
                continue
            wake, _, future = heapq.heappop(self._sleepers)
            self.now = max(self.now, wake)
            if not future.done():
                future.set_result(None)


class MemorySurface:
    def __init__(self, max_chars: int = 4000, fail: list[Exception] | None = None, budget_log=None, clock=None):
        self.max_chars = max_chars
        self.messages: list[str] = []
        self.calls: list[tuple[str, int, str]] = []
        self.fail = fail or []
        self.budget_log = budget_log
        self.clock = clock

    def render(self, view: ReplyView) -> str:
        return render_plain(view)

    def _maybe_fail(self) -> None:
        if self.fail:
            raise self.fail.pop(0)

    async def post(self, text: str, view: ReplyView) -> int:
        self._maybe_fail()
        self.messages.append(text)
        self.calls.append(("post", len(self.messages) - 1, text))
        self._log()
        return len(self.messages) - 1

    async def edit(self, handle: int, text: str, view: ReplyView) -> None:
        self._maybe_fail()
        if len(text) > self.max_chars:
            raise MessageTooLong()
        self.messages[handle] = text
        self.calls.append(("edit", handle, text))
        self._log()

    def _log(self) -> None:
        if self.budget_log is not None:
            self.budget_log.append(self.clock())


def script(time: FakeTime, tokens: list[str], gap: float = 0.05, *, agent: str = "billing", end: str = "complete",
           sources: bool = True):
    async def events():
        yield Start("k")
        await time.sleep(0.01)
        yield Agent(agent, agent.capitalize(), "test")
        for token in tokens:
            await time.sleep(gap)
            yield Token(token)
        if sources:
            yield Sources((SourceRef("Plans and pricing", "billing/plans-and-pricing.md"),))
        if end == "complete":
            yield Complete(agent, 1.0, text="".join(tokens))
        elif end == "error":
            yield Error("llm_unavailable", "I couldn't reach the language model just now.", "".join(tokens))
        elif end == "raise":
            raise RuntimeError("core exploded")

    return events()


async def test_placeholder_agent_and_final_text_with_tag_and_sources() -> None:
    time = FakeTime()
    surface = MemorySurface()
    tokens = [f"word{i} " for i in range(30)]
    reply = StreamingReply(surface, min_interval_s=1.0, clock=time.clock, sleep=time.sleep)
    outcome = await reply.run(script(time, tokens))
    assert surface.calls[0][0] == "post" and "Thinking" in surface.calls[0][2]
    assert any("Billing" in text for _, _, text in surface.calls[1:3])
    final = surface.messages[0]
    assert final.startswith("*Billing*") and "".join(tokens).strip() in final
    assert "— Billing · Sources: Plans and pricing" in final and "▌" not in final
    assert outcome.delivered and outcome.status == "done" and len(surface.messages) == 1


async def test_edits_are_paced_and_pending_tokens_merge() -> None:
    time = FakeTime()
    surface = MemorySurface()
    tokens = [f"t{i} " for i in range(200)]  # 200 tokens over 10 simulated seconds
    outcome = await StreamingReply(surface, min_interval_s=1.0, clock=time.clock, sleep=time.sleep).run(
        script(time, tokens, gap=0.05))
    assert 8 <= outcome.edits <= 14
    assert "".join(tokens) in surface.messages[0]


async def test_first_token_is_shown_without_waiting_for_the_interval() -> None:
    time = FakeTime()
    surface = MemorySurface()
    arrivals: list[float] = []

    async def events():
        yield Start("k")
        yield Agent("technical", "Technical")
        await time.sleep(0.2)
        arrivals.append(time.now)
        yield Token("Hello ")
        await time.sleep(5)
        yield Complete("technical", 1.0, text="Hello ")

    outcome = await StreamingReply(surface, min_interval_s=1.0, clock=time.clock, sleep=time.sleep).run(events())
    assert outcome.first_token_at is not None and outcome.first_token_at - arrivals[0] < 0.01


async def test_final_text_lands_after_429_on_last_edit() -> None:
    time = FakeTime()
    surface = MemorySurface()
    reply = StreamingReply(surface, min_interval_s=1.0, clock=time.clock, sleep=time.sleep)

    async def events():
        yield Start("k")
        yield Agent("billing", "Billing")
        yield Token("Almost ")
        await time.sleep(2)
        surface.fail = [RateLimited(3.0), RateLimited(1.5)]  # the final edit is refused twice
        yield Complete("billing", 1.0, text="Almost done.")

    outcome = await reply.run(events())
    assert outcome.delivered and outcome.rate_limited == 2
    assert "Almost done." in surface.messages[0] and "▌" not in surface.messages[0]


async def test_long_answer_splits_into_parts_with_balanced_fences() -> None:
    time = FakeTime()
    surface = MemorySurface(max_chars=600)
    text = "Intro paragraph.\n\n```python\n" + "\n".join(f"line_{i} = {i}" for i in range(120)) + "\n```\n\nDone."
    tokens = [text[i:i + 40] for i in range(0, len(text), 40)]
    outcome = await StreamingReply(surface, min_interval_s=0.5, clock=time.clock, sleep=time.sleep).run(
        script(time, tokens, gap=0.02))
    assert len(surface.messages) >= 3 and outcome.delivered
    assert all(len(m) <= 600 for m in surface.messages)
    assert all(m.count("```") % 2 == 0 for m in surface.messages)
    assert "Sources" in surface.messages[-1] and "continued" in surface.messages[0]
    assert all(f"line_{i} = {i}" in "".join(surface.messages) for i in range(120))


async def test_error_event_ends_the_message_readably() -> None:
    time = FakeTime()
    surface = MemorySurface()
    outcome = await StreamingReply(surface, clock=time.clock, sleep=time.sleep).run(
        script(time, ["Partial ", "answer "], end="error", sources=False))
    final = surface.messages[0]
    assert "Partial answer" in final and "couldn't reach the language model" in final
    assert "▌" not in final and "Thinking" not in final and outcome.status == "error"


async def test_iterator_exception_becomes_a_readable_error() -> None:
    time = FakeTime()
    surface = MemorySurface()
    outcome = await StreamingReply(surface, clock=time.clock, sleep=time.sleep).run(
        script(time, ["Some "], end="raise", sources=False))
    assert "Something went wrong" in surface.messages[0] and "Traceback" not in surface.messages[0]
    assert outcome.delivered


async def test_cancellation_lands_an_interrupted_note() -> None:
    surface = MemorySurface()
    started = asyncio.Event()

    async def endless():
        yield Start("k")
        yield Agent("policy", "Policy")
        yield Token("Half ")
        started.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(StreamingReply(surface, min_interval_s=0.0).run(endless()))
    await started.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "interrupted" in surface.messages[0] and "Half" in surface.messages[0]


async def test_two_replies_sharing_a_budget_never_exceed_it() -> None:
    time = FakeTime()
    log: list[float] = []
    budget = EditBudget(5, 5.0, clock=time.clock, sleep=time.sleep)
    surfaces = [MemorySurface(budget_log=log, clock=time.clock) for _ in range(2)]
    replies = [StreamingReply(s, min_interval_s=0.2, budget=budget, clock=time.clock, sleep=time.sleep)
               for s in surfaces]
    await asyncio.gather(*(r.run(script(time, [f"w{i} " for i in range(60)], gap=0.1)) for r in replies))
    for start in log:
        assert sum(1 for t in log if start <= t < start + 5.0) <= 5
    assert all("w59" in s.messages[0] for s in surfaces)


def test_pacer_and_budget_maths() -> None:
    time = FakeTime()
    pacer = EditPacer(1.0, time.clock)
    assert pacer.wait_time() == 0
    pacer.record()
    time.now += 0.4
    assert pacer.wait_time() == pytest.approx(0.6)
    budget = EditBudget(2, 5.0, clock=time.clock)
    budget._times.extend([time.now, time.now])
    assert budget.wait_time() == pytest.approx(5.0)
    budget.note_rate_limited(9.0)
    assert budget.wait_time() == pytest.approx(9.0)


def test_split_keeps_fences_balanced_on_random_markdown() -> None:
    rng = random.Random(3)
    for _ in range(200):
        blocks = []
        for _ in range(rng.randint(1, 12)):
            if rng.random() < 0.3:
                lang = rng.choice(["", "python", "bash"])
                blocks.append(f"```{lang}\n" + "\n".join("x" * rng.randint(1, 80) for _ in range(rng.randint(1, 30)))
                              + "\n```")
            else:
                blocks.append(" ".join("word" * rng.randint(1, 3) for _ in range(rng.randint(1, 120))))
        text = "\n\n".join(blocks)
        limit = rng.randint(60, 900)
        parts = split_markdown(text, limit)
        assert all(len(p) <= limit for p in parts)
        assert all(open_fence(p) is None for p in parts)
        rejoined = "".join(parts).replace("```", "").replace(" ", "").replace("\n", "")
        for lang in ("python", "bash"):
            rejoined = rejoined.replace(lang, "")
        original = text.replace("```", "").replace(" ", "").replace("\n", "")
        for lang in ("python", "bash"):
            original = original.replace(lang, "")
        assert rejoined == original
