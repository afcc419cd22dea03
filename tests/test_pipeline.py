"""The shared answer pipeline over the real core (offline) and an in-memory surface in virtual time."""

from __future__ import annotations

import asyncio

from bots.metrics import REGISTRY
from bots.pacing import EditBudget
from bots.pipeline import AnswerPipeline, Inbound, PlatformTexts
from bots.surface import RateLimited
from core.orchestrator import build_orchestrator
from tests.test_streaming import MemorySurface, VirtualTime, vtime  # noqa: F401 - the fixture

TEXTS = PlatformTexts(usage="How to ask me.", reset_done="Forgotten.")


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_help_reset_and_a_question_take_their_own_paths(corpus_settings, vtime: VirtualTime) -> None:
    core = await build_orchestrator(corpus_settings)
    try:
        pipeline = AnswerPipeline(core, "testplatform", TEXTS, clock=vtime.clock, sleep=vtime.sleep)
        key = "test:conversation:1"
        help_surface = MemorySurface(vtime)
        assert await pipeline.answer(Inbound("testplatform", key, " help ", "u1"), help_surface) is None
        assert help_surface.messages == ["How to ask me."]

        before = sample("switchboard_first_token_seconds_count", frontend="testplatform")
        surface = MemorySurface(vtime)
        outcome = await pipeline.answer(Inbound("testplatform", key, "How do I rotate an API key?", "u1"), surface)
        assert outcome is not None and outcome.delivered and outcome.agent == "technical"
        assert "Technical" in surface.messages[0] and "Sources" in surface.messages[-1]
        assert pipeline.recent[-1] == (key, outcome)
        assert sample("switchboard_first_token_seconds_count", frontend="testplatform") == before + 1
        assert sample("switchboard_replies_total", frontend="testplatform", agent="technical") >= 1
        assert (await core.session_info(key)) is not None

        reset_surface = MemorySurface(vtime)
        await pipeline.answer(Inbound("testplatform", key, "Reset.", "u1"), reset_surface)
        assert reset_surface.messages == ["Forgotten."] and await core.session_info(key) is None
    finally:
        await core.aclose()


async def test_a_notice_refused_with_429_waits_and_teaches_the_post_budget(corpus_settings, vtime) -> None:
    core = await build_orchestrator(corpus_settings)
    try:
        budget = EditBudget(5, 5.0, clock=vtime.clock, sleep=vtime.sleep)
        pipeline = AnswerPipeline(core, "testplatform", TEXTS, clock=vtime.clock, sleep=vtime.sleep)
        surface = MemorySurface(vtime, budget=budget)
        surface.fail_next(RateLimited(2.0))
        started = vtime.now
        await pipeline.answer(Inbound("testplatform", "test:k", "help", "u1"), surface)
        assert surface.messages == ["How to ask me."] and surface.calls[0][0] >= started + 2.0
        assert budget.blocked_until == started + 2.0
    finally:
        await core.aclose()


async def test_drain_lands_an_interrupted_note_and_counts_the_reply(corpus_settings, vtime) -> None:
    core = await build_orchestrator(corpus_settings)
    try:
        pipeline = AnswerPipeline(core, "testplatform", TEXTS, clock=vtime.clock, sleep=vtime.sleep)
        surface = MemorySurface(vtime, latency=0.5)
        pipeline.inflight.spawn(pipeline.answer(Inbound("testplatform", "test:d", "What does Pro cost?", "u"),
                                                surface))
        while not surface.messages:
            await asyncio.sleep(0.01)
        await pipeline.inflight.drain(5)
        [(_, outcome)] = list(pipeline.recent)
        assert outcome.status == "interrupted" and "interrupted" in surface.messages[-1]
    finally:
        await core.aclose()


async def test_a_reply_in_flight_is_registered_at_its_newest_message_and_finished_at_the_end(corpus_settings,
                                                                                            vtime) -> None:
    from coordination import LocalInflightRegistry

    class Registry(LocalInflightRegistry):
        def __init__(self) -> None:
            super().__init__("test")
            self.where: list[int] = []

        async def start(self, reply_id, info, lease_s=15.0) -> None:
            self.where.append(info["message"])
            await super().start(reply_id, info, lease_s)

    core = await build_orchestrator(corpus_settings)
    try:
        registry = Registry()
        pipeline = AnswerPipeline(core, "testplatform", TEXTS, clock=vtime.clock, sleep=vtime.sleep, replies=registry)
        surface = MemorySurface(vtime, max_chars=300)
        surface.locate = lambda handle: {"message": handle}  # type: ignore[attr-defined]
        outcome = await pipeline.answer(Inbound("testplatform", "test:t", "How do I rotate an API key?", "u"),
                                        surface)
        assert outcome is not None and len(outcome.handles) >= 2  # the answer ran over several messages
        assert registry.where[0] == 0 and registry.where[-1] == outcome.handles[-1]
        assert len(registry) == 0  # finished: nothing left for another replica to mark as orphaned
    finally:
        await core.aclose()
