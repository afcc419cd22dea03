"""What the burst-performance work changed, each as behaviour: one retrieval per turn, CPU work off the event
loop (streams in flight keep flowing while new questions are routed), and one checkpoint per turn that is on
disk before the turn reports `Complete` (a process killed right after a reply loses nothing).

Real parts throughout: the local embeddings over the sample corpus, Chroma, SQLite checkpoints, and the real
ChatOpenAI against the loopback fake OpenAI server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading

import pytest

from core.events import Agent, Complete, Sources, Token
from core.orchestrator import build_orchestrator
from knowledge.agents import load_agents
from knowledge.base import open_knowledge_base
from knowledge.embeddings import local_model
from tests.conftest import ROOT, make_settings
from tests.fakes.openai_server import FakeOpenAI, Reply


class CountingKnowledge:
    """The real knowledge base, counting the retrievals the core asks for (by agent)."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.calls: list[str] = []

    def retrieve(self, agent: str, query: str, k: int):
        self.calls.append(agent)
        return self._inner.retrieve(agent, query, k)

    def cached_context(self, agent: str):
        return self._inner.cached_context(agent)

    def counts(self):
        return self._inner.counts()


class GatedEmbedder:
    """The real local model, but a question containing `gate_word` waits at the gate before it is embedded."""

    def __init__(self, gate_word: str) -> None:
        self._model = local_model()
        self.name, self.dim = self._model.name, self._model.dim
        self.gate_word = gate_word
        self.waiting = threading.Event()
        self.gate = threading.Event()

    def embed_documents(self, texts):
        return self._model.embed_documents(texts)

    def embed_query(self, text: str):
        if self.gate_word in text:
            self.waiting.set()
            assert self.gate.wait(30), "the gate was never opened"
        return self._model.embed_query(text)


async def _turn(orchestrator, key: str, question: str) -> list:
    return [event async for event in orchestrator.respond(key, question)]


@pytest.mark.parametrize("llm", [False, True], ids=["offline", "model"])
async def test_a_turn_retrieves_once_per_probed_agent_and_the_winner_answers_from_its_probe(
        corpus_settings, llm) -> None:
    async with FakeOpenAI() as fake:
        settings = corpus_settings
        if llm:
            settings = make_settings(corpus_settings.data_dir, llm_provider="openai", openai_base_url=fake.base_url,
                                     openai_api_key="sk-test")
        agents = load_agents(None)
        knowledge = CountingKnowledge(open_knowledge_base(settings, local_model(), agents))
        orchestrator = await build_orchestrator(settings, knowledge=knowledge, agents=agents)
        try:
            for question, agent in [("My API integration keeps timing out. How do I fix this?", "technical"),
                                    ("What does the Enterprise plan cost?", "billing")]:
                knowledge.calls.clear()
                decision = await orchestrator.route(question)
                probed = sorted(decision.probes)
                knowledge.calls.clear()
                events = await _turn(orchestrator, f"once:{llm}:{agent}", question)
                assert [e.name for e in events if isinstance(e, Agent)] == [agent]
                assert isinstance(events[-1], Complete)
                # The router probed its contenders; the agent asked for nothing more.
                assert sorted(knowledge.calls) == probed and agent in probed
                # ...and answered from exactly what its probe found.
                sources = [e for e in events if isinstance(e, Sources)]
                expected = {p.source for p in decision.probes[agent]}
                assert sources and {s.source for s in sources[0].items} <= expected
                if llm:
                    prompt = fake.requests[-1].body["messages"][-1]["content"]
                    assert decision.probes[agent][0].text[:60] in prompt
        finally:
            await orchestrator.aclose()


async def test_streams_in_flight_keep_flowing_while_a_new_question_is_being_embedded(corpus_settings) -> None:
    embedder = GatedEmbedder("GATED")
    async with FakeOpenAI(tokens_per_s=200) as fake:
        fake.responder = lambda body: Reply(text=" ".join(f"w{i}" for i in range(400)))
        settings = make_settings(corpus_settings.data_dir, llm_provider="openai", openai_base_url=fake.base_url,
                                 openai_api_key="sk-test")
        orchestrator = await build_orchestrator(settings, embedder=embedder)
        try:
            tokens = 0
            first = asyncio.Event()
            enough = asyncio.Event()

            async def in_flight() -> None:
                nonlocal tokens
                async for event in orchestrator.respond("flow:a", "How do I fix API timeouts?"):
                    if isinstance(event, Token):
                        tokens += 1
                        first.set()
                        if embedder.waiting.is_set() and tokens >= counted_at + 20:
                            enough.set()

            counted_at = 10**9
            streaming = asyncio.create_task(in_flight())
            await asyncio.wait_for(first.wait(), 30)
            arriving = asyncio.create_task(_turn(orchestrator, "flow:b", "GATED question about invoices"))
            await asyncio.wait_for(asyncio.to_thread(embedder.waiting.wait, 30), 35)
            counted_at = tokens
            # The new question is stuck inside its embedding; the stream in flight must still get its tokens.
            await asyncio.wait_for(enough.wait(), 30)
            embedder.gate.set()
            events = await asyncio.wait_for(arriving, 30)
            assert isinstance(events[-1], Complete)
            await asyncio.wait_for(streaming, 60)
        finally:
            embedder.gate.set()
            await orchestrator.aclose()


async def test_streamed_tokens_reach_the_turn_without_waking_the_event_loop_for_each(corpus_settings) -> None:
    """The nodes hand their tokens to the turn on the loop (`TurnContext.emit`). LangGraph's custom stream would
    hand each over with `call_soon_threadsafe`, one write to the loop's self-pipe per token."""
    async with FakeOpenAI(tokens_per_s=2000) as fake:
        fake.responder = lambda body: Reply(text=" ".join(f"w{i}" for i in range(300)))
        settings = make_settings(corpus_settings.data_dir, llm_provider="openai", openai_base_url=fake.base_url,
                                 openai_api_key="sk-test", stream_batch_ms=0)  # every token its own event
        orchestrator = await build_orchestrator(settings)
        loop = asyncio.get_running_loop()
        wakes = 0
        original = loop._write_to_self  # type: ignore[attr-defined]

        def counted() -> None:
            nonlocal wakes
            wakes += 1
            original()

        try:
            await _turn(orchestrator, "wakes:warm", "How do I fix API timeouts?")
            loop._write_to_self = counted  # type: ignore[attr-defined]
            events = await _turn(orchestrator, "wakes:a", "How do I fix API timeouts?")
        finally:
            loop._write_to_self = original  # type: ignore[attr-defined]
            await orchestrator.aclose()
        tokens = [e for e in events if isinstance(e, Token)]
        assert isinstance(events[-1], Complete) and len(tokens) >= 300
        assert wakes < 40, f"{wakes} self-pipe wake-ups for {len(tokens)} tokens"  # worker threads' results only


async def test_a_reader_that_stops_early_stops_the_turns_graph(corpus_settings) -> None:
    async with FakeOpenAI(tokens_per_s=100) as fake:
        fake.responder = lambda body: Reply(text=" ".join(f"w{i}" for i in range(1000)))  # 10 s of answer
        settings = make_settings(corpus_settings.data_dir, llm_provider="openai", openai_base_url=fake.base_url,
                                 openai_api_key="sk-test")
        orchestrator = await build_orchestrator(settings)
        try:
            stream = orchestrator.respond("early:stop", "How do I fix API timeouts?")
            async for event in stream:
                if isinstance(event, Token):
                    break
            await stream.aclose()
            running = [t for t in asyncio.all_tasks() if "_run_graph" in repr(t.get_coro())]
            assert running == []
            # The session is free again: its next turn answers.
            fake.responder = lambda body: Reply(text="Second answer.")
            events = await asyncio.wait_for(_turn(orchestrator, "early:stop", "How do I fix API timeouts?"), 30)
            assert isinstance(events[-1], Complete) and events[-1].text == "Second answer."
        finally:
            await orchestrator.aclose()


class MeetingEmbedder:
    """The real local model, but no question is embedded until `together` of them are waiting at once."""

    def __init__(self, together: int) -> None:
        self._model = local_model()
        self.name, self.dim = self._model.name, self._model.dim
        self.meeting = threading.Barrier(together)

    def embed_documents(self, texts):
        return self._model.embed_documents(texts)

    def embed_query(self, text: str):
        self.meeting.wait(20)  # BrokenBarrierError if `together` never get here at the same time
        return self._model.embed_query(text)


async def test_more_questions_than_asyncios_default_threads_wait_on_the_embedder_together(corpus_settings) -> None:
    """The embedder's coalescer batches the questions waiting on it; routing in asyncio's default executor let
    only cpu_count + 4 of them wait at once (6 on this machine), so batches never grew past that."""
    together = (os.cpu_count() or 1) + 4 + 6
    orchestrator = await build_orchestrator(corpus_settings, embedder=MeetingEmbedder(together))
    try:
        turns = await asyncio.wait_for(asyncio.gather(*(
            _turn(orchestrator, f"meet:{i}", f"How do I rotate an API key? ({i})") for i in range(together))), 60)
    finally:
        await orchestrator.aclose()
    assert all(isinstance(events[-1], Complete) for events in turns)


class WatchedEmbedder:
    """The real local model, noting each question it is asked to embed."""

    def __init__(self) -> None:
        self._model = local_model()
        self.name, self.dim = self._model.name, self._model.dim
        self.asked = threading.Event()

    def embed_documents(self, texts):
        return self._model.embed_documents(texts)

    def embed_query(self, text: str):
        if "AHEAD" in text:
            self.asked.set()
        return self._model.embed_query(text)


async def test_the_question_is_embedded_while_its_conversation_is_still_being_read(corpus_settings) -> None:
    """Routing's embedding does not wait for the turn to open (ledger, checkpoint read, graph set-up)."""
    embedder = WatchedEmbedder()
    orchestrator = await build_orchestrator(corpus_settings, embedder=embedder)
    reading, release = asyncio.Event(), asyncio.Event()
    read = orchestrator.checkpointer.aget_tuple

    async def slow_read(config):
        reading.set()
        await release.wait()
        return await read(config)

    orchestrator.checkpointer.aget_tuple = slow_read
    try:
        turn = asyncio.create_task(_turn(orchestrator, "ahead:1", "AHEAD: how do I rotate an API key?"))
        await asyncio.wait_for(reading.wait(), 30)
        # The conversation's checkpoint is still being read: the question must already be with the embedder.
        assert await asyncio.to_thread(embedder.asked.wait, 10)
        release.set()
        events = await asyncio.wait_for(turn, 30)
    finally:
        release.set()
        await orchestrator.aclose()
    assert isinstance(events[-1], Complete)


def _checkpoints(settings, thread: str) -> int:
    with sqlite3.connect(settings.checkpoint_path) as db:
        return db.execute("SELECT COUNT(*) FROM checkpoints WHERE thread_id = ?", (thread,)).fetchone()[0]


async def test_a_conversation_keeps_one_checkpoint_however_many_turns(offline_orchestrator, corpus_settings) -> None:
    """Each checkpoint holds the whole conversation: keeping only the latest makes storage linear in the turns,
    not quadratic; the conversation reads back whole."""
    for turn in range(1, 5):
        events = await _turn(offline_orchestrator, "one:checkpoint", f"How do I rotate an API key? ({turn})")
        assert isinstance(events[-1], Complete)
        assert _checkpoints(corpus_settings, "one:checkpoint") == 1
    with sqlite3.connect(corpus_settings.checkpoint_path) as db:
        ids = {row[0] for row in db.execute("SELECT checkpoint_id FROM writes WHERE thread_id = 'one:checkpoint'")}
        latest = db.execute("SELECT checkpoint_id FROM checkpoints WHERE thread_id = 'one:checkpoint'").fetchone()[0]
    assert ids <= {latest}  # no pending writes left behind for pruned checkpoints
    info = await offline_orchestrator.session_info("one:checkpoint")
    assert info is not None and info.turns == 4
    state = await offline_orchestrator.graph.aget_state({"configurable": {"thread_id": "one:checkpoint"}})
    assert [m.content for m in state.values["messages"] if m.type == "human"] == [
        f"How do I rotate an API key? ({turn})" for turn in range(1, 5)]
    await _turn(offline_orchestrator, "other:thread", "Do you comply with GDPR?")
    assert _checkpoints(corpus_settings, "one:checkpoint") == 1 and _checkpoints(corpus_settings, "other:thread") == 1


@pytest.fixture
async def offline_orchestrator(corpus_settings):
    orchestrator = await build_orchestrator(corpus_settings)
    yield orchestrator
    await orchestrator.aclose()


CHILD = textwrap.dedent("""
    import asyncio, sys, time
    from pathlib import Path
    from core.events import Complete
    from core.orchestrator import build_orchestrator
    from tests.conftest import make_settings

    async def main():
        orchestrator = await build_orchestrator(make_settings(Path(sys.argv[1])))
        async for event in orchestrator.respond("killed:after", "Do you comply with GDPR?"):
            if isinstance(event, Complete):
                print("COMPLETE " + event.text[:40].replace("\\n", " "), flush=True)
                time.sleep(60)  # killed here, before anything else could be written or closed

    asyncio.run(main())
""")


async def test_a_process_killed_right_after_a_reply_keeps_the_turn(corpus_settings) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(corpus_settings.data_dir)], cwd=ROOT,
                             stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 90)
        assert line.startswith(b"COMPLETE "), line
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(10)
    orchestrator = await build_orchestrator(corpus_settings)
    try:
        info = await orchestrator.session_info("killed:after")
        assert info is not None and info.turns == 1 and info.agents == ("policy",)
        state = await orchestrator.graph.aget_state({"configurable": {"thread_id": "killed:after"}})
        answer = state.values["messages"][-1].content
        assert answer.replace("\n", " ").startswith(line.decode()[len("COMPLETE "):].rstrip("\n"))
    finally:
        await orchestrator.aclose()


def test_the_shipped_defaults_probe_as_deep_as_agents_retrieve() -> None:
    """The reuse above only happens when a probe is at least the agent's retrieval depth."""
    from core.orchestrator import build_router
    from core.settings import Settings

    settings = Settings(_env_file=None)
    router = build_router(settings, local_model(), None, load_agents(None))
    assert router.probe_k == settings.retrieval_k
