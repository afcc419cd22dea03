"""`switchboard run`: start-up validation, the store check, serving the web front-end, and a clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientConnectorError, ClientSession
from typer.testing import CliRunner

import core.orchestrator
from bots.startup import StartupError, validate_settings
from tests.conftest import make_settings
from tests.fakes.openai_server import FakeOpenAI
from switchboard.run import serve
from tests.test_web import parse_sse

DISCORD_LOOKALIKE = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GAbCdE.abcdefghijklmnopqrstuvwxyz0123"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- validate_settings -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides,in_message,in_fix", [
    ({"slack_bot_token": "xoxp-user-token", "slack_app_token": "xapp-1-abc"}, "xoxb-", "Bot User OAuth Token"),
    ({"slack_bot_token": "xoxb-1-abc"}, "SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"),
    ({"slack_bot_token": "xoxb-1-abc", "slack_app_token": "xoxb-wrong"}, "xapp-", "App-Level Tokens"),
    ({"slack_signing_secret": "abc123"}, "SLACK_BOT_TOKEN is missing", "SLACK_BOT_TOKEN (xoxb-...)"),
    ({"discord_token": "not-a-token"}, "DISCORD_TOKEN does not look like a bot token", "Developer Portal"),
    ({"llm_provider": "openai"}, "neither OPENAI_API_KEY nor OPENAI_BASE_URL", "LLM_PROVIDER=auto"),
    ({"web_port": 0}, "WEB_PORT=0 is not a valid port", "8000"),
    ({"web_port": 70000}, "WEB_PORT=70000", "8000"),
])
def test_each_settings_problem_is_one_sentence_with_its_fix(tmp_path, overrides, in_message, in_fix) -> None:
    problems = validate_settings(make_settings(tmp_path, **overrides))
    assert len(problems) == 1, problems
    problem = problems[0]
    assert in_message in problem.message and in_fix in problem.fix
    assert problem.message.endswith(".") and problem.fix.endswith(".")


@pytest.mark.parametrize("overrides", [
    {},
    {"slack_bot_token": "xoxb-1-abc", "slack_app_token": "xapp-1-abc"},
    {"slack_bot_token": "xoxb-1-abc", "slack_signing_secret": "abc123"},
    {"discord_token": DISCORD_LOOKALIKE},
    {"llm_provider": "openai", "openai_base_url": "http://127.0.0.1:9/v1"},
    {"llm_provider": "openai", "openai_api_key": "sk-test"},
])
def test_consistent_settings_have_no_problems(tmp_path, overrides) -> None:
    assert validate_settings(make_settings(tmp_path, **overrides)) == []


def test_every_problem_is_reported_at_once(tmp_path) -> None:
    settings = make_settings(tmp_path, slack_bot_token="bad", discord_token="bad", web_port=0)
    assert len(validate_settings(settings)) == 4  # bot token prefix, no app token/secret, discord, port


# --- serve() ---------------------------------------------------------------------------------------------------

async def test_serve_refuses_bad_settings_before_building_anything(tmp_path, monkeypatch) -> None:
    async def must_not_build(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("built an orchestrator despite invalid settings")

    monkeypatch.setattr(core.orchestrator, "build_orchestrator", must_not_build)
    with pytest.raises(StartupError) as info:
        await serve(make_settings(tmp_path, slack_bot_token="xoxp-1", web_port=0))
    text = str(info.value)
    assert text.count("Fix:") == 3 and "xoxb-" in text and "WEB_PORT=0" in text


@pytest.fixture
def closed_orchestrators(monkeypatch) -> list[str]:
    """Records each orchestrator serve() builds: "open" when built, "closed" once aclose() ran."""
    states: list[str] = []
    real_build = core.orchestrator.build_orchestrator

    async def build(settings: Any, **kwargs: Any) -> Any:
        orchestrator = await real_build(settings, **kwargs)
        index = len(states)
        states.append("open")
        real_close = orchestrator.aclose

        async def aclose() -> None:
            await real_close()
            states[index] = "closed"

        orchestrator.aclose = aclose  # type: ignore[method-assign]
        return orchestrator

    monkeypatch.setattr(core.orchestrator, "build_orchestrator", build)
    return states


async def test_serve_refuses_an_empty_store_offering_ingest(tmp_path, closed_orchestrators) -> None:
    with pytest.raises(StartupError, match="switchboard ingest"):
        await serve(make_settings(tmp_path / "empty", web_port=free_port()))
    assert closed_orchestrators == ["closed"]


async def wait_until_up(port: int, timeout: float = 30.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with ClientSession() as http:
        while True:
            try:
                async with http.get(f"http://127.0.0.1:{port}/health") as response:
                    assert response.status == 200, await response.text()
                    return await response.json()
            except ClientConnectorError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def no_new_tasks_left() -> AsyncIterator[None]:
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    left = [t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()]
    assert left == [], left


async def test_serve_runs_the_web_server_and_stops_cleanly(corpus_settings, closed_orchestrators, capsys) -> None:
    port = free_port()
    stop = asyncio.Event()
    async with no_new_tasks_left():
        task = asyncio.create_task(serve(make_settings(corpus_settings.data_dir, web_port=port), stop=stop))
        health = await wait_until_up(port)
        assert health["status"] == "ok" and health["checks"]["llm"]["mode"] == "offline"
        async with ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{port}/chat", json={"message": "Do you comply with GDPR?"}) as r:
                assert r.status == 200
                events = parse_sse(await r.text())
        assert [t for t, _ in events][0] == "start" and events[-1][0] == "complete"
        assert events[1][1]["name"] == "policy"
        assert closed_orchestrators == ["open"]

        stop.set()
        await asyncio.wait_for(task, 15)
    assert task.exception() is None
    assert closed_orchestrators == ["closed"]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    out = " ".join(capsys.readouterr().out.split())
    assert f"http://127.0.0.1:{port}" in out and "offline mode" in out
    assert "Slack and Discord are off" in out and "Shutting down" in out


async def test_sigterm_stops_serve_and_restores_signal_handling(corpus_settings, closed_orchestrators) -> None:
    port = free_port()
    fell_through: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda *_: fell_through.append(1))  # a guard if serve installs none
    try:
        task = asyncio.create_task(serve(make_settings(corpus_settings.data_dir, web_port=port)))
        await wait_until_up(port)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(task, 15)
        assert fell_through == [] and closed_orchestrators == ["closed"]
        # The loop's handlers are removed again: Ctrl-C raises KeyboardInterrupt as usual after serve() returns.
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, previous)


async def test_stopping_mid_stream_sends_interrupted(corpus_settings, closed_orchestrators) -> None:
    port = free_port()
    stop = asyncio.Event()
    async with FakeOpenAI(tokens_per_s=5) as fake:
        settings = make_settings(corpus_settings.data_dir, web_port=port, llm_provider="openai",
                                 openai_base_url=fake.base_url, openai_api_key="sk-test")
        task = asyncio.create_task(serve(settings, stop=stop))
        await wait_until_up(port)
        lines: list[str] = []
        async with ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{port}/chat", json={"message": "How do API timeouts work?"}) as r:
                with contextlib.suppress(Exception):  # the server closes the connection after the last frame
                    async for line in r.content:
                        lines.append(line.decode())
                        if line.startswith(b"event: token"):
                            stop.set()
        await asyncio.wait_for(task, 15)
    events = parse_sse("".join(lines))
    assert ("token" in [t for t, _ in events]) and events[-1][0] == "error"
    assert events[-1][1]["code"] == "interrupted" and "ask again" in events[-1][1]["user_message"]
    assert "complete" not in [t for t, _ in events]
    assert closed_orchestrators == ["closed"]


# --- the CLI ---------------------------------------------------------------------------------------------------

def run_cli(tmp_path: Path, monkeypatch, **env: str | None) -> Any:
    from switchboard.cli import app

    monkeypatch.chdir(tmp_path)  # no developer .env
    monkeypatch.setattr("core.logging_setup.setup_logging", lambda level="INFO": None)
    base: dict[str, str | None] = {
        "SWITCHBOARD_DATA_DIR": str(tmp_path / "data"), "LLM_PROVIDER": "offline", "EMBEDDING_PROVIDER": "local",
        "OPENAI_API_KEY": None, "OPENAI_BASE_URL": None, "CHROMA_HOST": None, "SLACK_BOT_TOKEN": None,
        "SLACK_APP_TOKEN": None, "SLACK_SIGNING_SECRET": None, "DISCORD_TOKEN": None, "WEB_PORT": None,
    }
    base.update(env)
    return CliRunner().invoke(app, ["run"], env=base)


def test_cli_run_exits_2_with_a_readable_settings_problem(tmp_path, monkeypatch) -> None:
    result = run_cli(tmp_path, monkeypatch, SLACK_BOT_TOKEN="xoxp-123", SLACK_APP_TOKEN="xapp-1")
    out = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "Cannot start:" in out and "start with xoxb-" in out and "Fix: Copy the Bot User OAuth Token" in out
    assert "Traceback" not in result.output


def test_cli_run_exits_2_offering_ingest_when_the_store_is_empty(tmp_path, monkeypatch) -> None:
    result = run_cli(tmp_path, monkeypatch, WEB_PORT=str(free_port()))
    out = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "Cannot start:" in out and "knowledge base is empty" in out and "switchboard ingest" in out
    assert "Traceback" not in result.output


async def test_a_front_end_that_cannot_connect_stops_start_up_with_a_sentence(corpus_settings,
                                                                              closed_orchestrators) -> None:
    from pydantic import SecretStr

    settings = corpus_settings.model_copy(update={
        "web_port": free_port(), "slack_bot_token": SecretStr("xoxb-123-456-abc"),
        "slack_app_token": SecretStr("xapp-1-A1-2-abc"), "slack_api_url": f"http://127.0.0.1:{free_port()}/api/"})
    with pytest.raises(StartupError, match=r"^slack could not start \(.*\)\. Check the network and the SLACK_"):
        await serve(settings)
    assert closed_orchestrators == ["closed"]


async def test_serve_mounts_slack_http_events_on_the_web_server(corpus_settings, closed_orchestrators, capsys) -> None:
    from pydantic import SecretStr

    from tests.fakes.slack import CHANNEL, FakeSlack

    port, secret = free_port(), "run-signing-secret"
    stop = asyncio.Event()
    async with FakeSlack() as slack:
        settings = corpus_settings.model_copy(update={
            "web_port": port, "slack_bot_token": SecretStr(slack.bot_token), "slack_api_url": slack.api_url,
            "slack_signing_secret": SecretStr(secret)})
        task = asyncio.create_task(serve(settings, stop=stop))
        await wait_until_up(port)
        event = slack.app_mention("Do you comply with GDPR?")
        status, _ = await slack.deliver_http(f"http://127.0.0.1:{port}/slack/events", event, secret)
        assert status == 200
        await slack.wait_for(lambda: any("Policy" in m.text and "▌" not in m.text and "Thinking" not in m.text
                                         for m in slack.bot_messages(CHANNEL, event["ts"])), timeout=30)
        stop.set()
        await asyncio.wait_for(task, 15)
    out = " ".join(capsys.readouterr().out.split())
    assert "slack: HTTP events at /slack/events" in out


async def test_serve_starts_discord_beside_the_web_server_and_answers(corpus_settings, closed_orchestrators,
                                                                      capsys) -> None:
    from pydantic import SecretStr

    from tests.fakes.discord import FakeDiscord

    token = "MTAxMjM0NTY3ODkwMTIzNDU2Nzg5.GhIjKl.abcdefghijklmnopqrstuvwxyz0123"
    port = free_port()
    stop = asyncio.Event()
    async with FakeDiscord(token=token) as fake:
        settings = corpus_settings.model_copy(update={"web_port": port, "discord_token": SecretStr(token)})
        task = asyncio.create_task(serve(settings, stop=stop))
        await wait_until_up(port)
        await fake.wait_for(lambda: "discord" in " ".join(capsys.readouterr().out.split()) or task.done(),
                            timeout=30)
        dm = int(fake.dm_channel()["id"])
        await fake.user_message(dm, "Do you comply with GDPR?")
        await fake.wait_for(lambda: any("Policy" in m["content"] and "▌" not in m["content"]
                                        for m in fake.messages_in(dm, from_bot=True)), timeout=30)
        stop.set()
        await asyncio.wait_for(task, 15)
    assert task.exception() is None and closed_orchestrators == ["closed"]
    assert fake.gateway_connections == 0  # disconnected on shutdown


def test_each_worker_of_a_named_replica_gets_its_own_id(monkeypatch, tmp_path) -> None:
    """Workers hold their own locks, leases and shards: with REPLICA_ID set they must not share one holder id."""
    from switchboard.run import _replica_id
    from switchboard.workers import WORKER_ENV

    settings = make_settings(tmp_path, replica_id="web-1")
    monkeypatch.setenv(WORKER_ENV, "1/2")
    assert _replica_id(settings) == "web-1/1"
    monkeypatch.setenv(WORKER_ENV, "0/2")
    assert _replica_id(settings) == "web-1/0"
    monkeypatch.delenv(WORKER_ENV)
    assert _replica_id(settings) == "web-1"
    assert _replica_id(make_settings(tmp_path)) is None


@pytest.fixture
def restored_gc() -> Any:
    """The collector as it was before the test: thresholds back, nothing left frozen."""
    import gc

    thresholds = gc.get_threshold()
    yield gc
    gc.unfreeze()
    gc.set_threshold(*thresholds)


async def test_a_started_server_freezes_its_start_up_heap_and_collects_young_objects_less_often(
        corpus_settings, closed_orchestrators, restored_gc) -> None:
    from core.heap import YOUNG_THRESHOLD

    restored_gc.unfreeze()
    restored_gc.set_threshold(700, 10, 10)
    port, stop = free_port(), asyncio.Event()
    task = asyncio.create_task(serve(corpus_settings.model_copy(update={"web_port": port}), stop=stop))
    try:
        await wait_until_up(port)
        for _ in range(100):  # the heap is settled just after the front-ends have started
            if restored_gc.get_freeze_count():
                break
            await asyncio.sleep(0.02)
        assert restored_gc.get_freeze_count() > 10_000  # the models, indexes and modules of a started server
        assert restored_gc.get_threshold()[0] == YOUNG_THRESHOLD
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_a_burst_of_connections_is_accepted_at_once_not_after_a_syn_retry(corpus_settings,
                                                                                closed_orchestrators) -> None:
    """With aiohttp's default listen backlog (128), connections beyond it in a burst had their SYN dropped and
    were only established by the client's retry a second later."""
    import time

    port, stop = free_port(), asyncio.Event()
    task = asyncio.create_task(serve(corpus_settings.model_copy(update={"web_port": port}), stop=stop))
    writers = []
    try:
        await wait_until_up(port)

        async def connect() -> float:
            started = time.perf_counter()
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writers.append(writer)
            return time.perf_counter() - started

        waits = await asyncio.gather(*(connect() for _ in range(400)))
        assert max(waits) < 0.9, f"{sum(w >= 0.9 for w in waits)} connections waited for a SYN retry"
    finally:
        for writer in writers:
            writer.close()
        stop.set()
        await asyncio.wait_for(task, 30)
