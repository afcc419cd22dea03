""""Add to Slack" end to end: the real slack-bolt OAuth flow and slack_sdk clients against the loopback fake Slack.

The install page is served by our aiohttp web server (`create_app` with the Slack front-end's routes); the
installer's browser is an aiohttp client that follows the "Add to Slack" link to the fake's
`/oauth/v2/authorize`, which redirects back with a code, as Slack does. Events then arrive over Socket Mode
(workspace one) and the HTTP Events API (workspace two), and the fake records which token each call used.
"""

from __future__ import annotations

import asyncio
import html
import re
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from cryptography.fernet import Fernet
from pydantic import SecretStr
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.app import SlackFrontend
from bots.slack.oauth import build_oauth
from bots.slack.installations import NO_KEY, SQLITE_FILE, SqlInstallationStore, TokensRefused
from bots.slack.surface import SlackLimits
from bots.startup import StartupError, validate_settings
from bots.web.server import create_app
from core.orchestrator import build_orchestrator
from tests.fakes.slack import (CHANNEL, CLIENT_ID, CLIENT_SECRET, OTHER_TEAM_CHANNEL, OTHER_TEAM_ID, TEAM_ID,
                               FakeSlack, RateLimit)

SIGNING_SECRET = "oauth-signing-secret"
COOKIE = "slack-app-oauth-state"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(limits={"chat.update": RateLimit(per_minute=1200, burst=20)}) as fake:
        yield fake


def oauth_settings(base: Any, slack: FakeSlack, port: int, **overrides: Any) -> Any:
    values = {"slack_client_id": CLIENT_ID, "slack_client_secret": SecretStr(CLIENT_SECRET),
              "slack_signing_secret": SecretStr(SIGNING_SECRET), "slack_app_token": SecretStr(slack.app_token),
              "slack_api_url": slack.api_url, "slack_authorize_url": f"{slack.base_url}/oauth/v2/authorize",
              "slack_redirect_uri": f"http://127.0.0.1:{port}/slack/oauth_redirect", "slack_edit_interval_s": 0.05,
              "encryption_key": SecretStr(Fernet.generate_key().decode()), **overrides}
    return base.model_copy(update=values)


@dataclass
class Running:
    frontend: SlackFrontend
    url: str
    settings: Any

    @property
    def store(self) -> SqlInstallationStore:
        assert self.frontend.oauth is not None
        return self.frontend.oauth.store


@asynccontextmanager
async def running(base: Any, slack: FakeSlack, **overrides: Any) -> AsyncIterator[Running]:
    """The Slack front-end in "Add to Slack" mode (Socket Mode connected), mounted on our web server."""
    port = free_port()
    settings = oauth_settings(base, slack, port, **overrides)
    orchestrator = await build_orchestrator(settings)
    frontend = SlackFrontend(settings, orchestrator, limits=SlackLimits(updates_per_window=20, window_s=1.0))
    server = TestServer(create_app(orchestrator, extra_routes=frontend.http_routes()), host="127.0.0.1", port=port)
    await server.start_server()
    try:
        await frontend.start()
        await slack.wait_for_connection()
        yield Running(frontend, f"http://127.0.0.1:{port}", settings)
    finally:
        await frontend.stop()
        await server.close()
        await orchestrator.aclose()


async def install(http: aiohttp.ClientSession, bot: Running, team: str) -> tuple[int, str, str, str]:
    """A person clicks "Add to Slack" on the install page, approves in `team`, and lands on the redirect page:
    (status, page, the redirect URL, the state cookie)."""
    async with http.get(f"{bot.url}/slack/install") as page:
        assert page.status == 200
        body = await page.text()
        state_cookie = page.cookies[COOKIE].value
    link = html.unescape(re.search(r'href="([^"]*oauth/v2/authorize[^"]*)"', body).group(1))
    assert f"client_id={CLIENT_ID}" in link and "state=" in link and "scope=app_mentions" in link
    async with http.get(f"{link}&team={team}", allow_redirects=False) as approved:
        assert approved.status == 302
        redirect = approved.headers["Location"]
    assert redirect.startswith(f"{bot.url}/slack/oauth_redirect?code=")
    # The browser sends the state cookie back (the cookie is `Secure`; browsers treat 127.0.0.1 as secure)
    async with http.get(redirect, headers={"Cookie": f"{COOKIE}={state_cookie}"}) as landed:
        return landed.status, await landed.text(), redirect, state_cookie


async def answered(slack: FakeSlack, bot: Running, channel: str, thread_ts: str) -> list[Any]:
    await slack.wait_for(lambda: slack.bot_messages(channel, thread_ts) and
                         not slack.bot_messages(channel, thread_ts)[-1].text.startswith("_Thinking"), timeout=30)
    await asyncio.wait_for(bot.frontend.idle(), 30)
    return slack.bot_messages(channel, thread_ts)


async def until(read: Any, wanted: Any, timeout: float = 5.0) -> Any:
    """Read the store until it returns `wanted` (a listener runs after bolt's ack); the last value read."""
    deadline = time.monotonic() + timeout
    while True:
        value = await read()
        if value == wanted or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.01)


def tokens_used(slack: FakeSlack, channel: str) -> set[str]:
    return {c.token for c in slack.calls if c.method in ("chat.postMessage", "chat.update")
            and c.params.get("channel") == channel and c.ok}


async def test_two_workspaces_install_each_is_answered_with_its_own_token_kept_encrypted(corpus_settings,
                                                                                         slack) -> None:
    async with running(corpus_settings, slack) as bot, aiohttp.ClientSession() as http:
        for team in (TEAM_ID, OTHER_TEAM_ID):
            status, page, _, _ = await install(http, bot, team)
            assert status == 200 and "Thank you" in page
        [first] = slack.tokens_of(TEAM_ID)
        [second] = slack.tokens_of(OTHER_TEAM_ID)
        assert first != second
        assert (await bot.store.async_find_bot(enterprise_id=None, team_id=OTHER_TEAM_ID)).bot_token == second
        installed = {i.team_id: i.team_name for i in await bot.store.installed()}
        assert installed == {TEAM_ID: "Switchboard Test", OTHER_TEAM_ID: "Second Workspace"}
        # the exchange went through oauth.v2.access with the app's credentials, then auth.test with the new token
        exchanges = slack.calls_to("oauth.v2.access", ok=True)
        assert len(exchanges) == 2 and all(c.token.startswith("basic:") for c in exchanges)

        one = slack.app_mention("How much is the Pro plan?")  # workspace one, over Socket Mode
        await slack.send_event(one)
        two = slack.app_mention("How much is the Pro plan?", channel=OTHER_TEAM_CHANNEL)  # two, over HTTP
        two["team"] = OTHER_TEAM_ID
        status, _ = await slack.deliver_http(f"{bot.url}/slack/events", two, SIGNING_SECRET)
        assert status == 200
        assert (await answered(slack, bot, CHANNEL, one["ts"]))[-1].text.startswith("*Billing*")
        assert (await answered(slack, bot, OTHER_TEAM_CHANNEL, two["ts"]))[-1].text.startswith("*Billing*")
    assert tokens_used(slack, CHANNEL) == {first}
    assert tokens_used(slack, OTHER_TEAM_CHANNEL) == {second}
    await tokens_are_unreadable_without_the_key(bot.settings, {TEAM_ID: first, OTHER_TEAM_ID: second})


async def tokens_are_unreadable_without_the_key(settings: Any, tokens: dict[str, str]) -> None:
    """The database file holds the workspace ids in clear, never a token; another key decrypts nothing."""
    raw = b"".join(p.read_bytes() for p in settings.data_dir.glob(SQLITE_FILE + "*"))
    for team, token in tokens.items():
        assert team.encode() in raw and token.encode() not in raw and token.split("-")[-1].encode() not in raw
    other_key = settings.model_copy(update={"encryption_key": SecretStr(Fernet.generate_key().decode())})
    for store_settings, readable in ((other_key, False), (settings, True)):
        store = SqlInstallationStore(store_settings)
        try:
            bot = await store.async_find_bot(enterprise_id=None, team_id=TEAM_ID)
            assert (bot.bot_token == tokens[TEAM_ID]) if readable else bot is None
        finally:
            await store.aclose()


async def test_a_tampered_replayed_or_expired_state_gets_a_4xx_page_and_installs_nothing(corpus_settings,
                                                                                         slack) -> None:
    async with running(corpus_settings, slack) as bot, aiohttp.ClientSession() as http:
        async with http.get(f"{bot.url}/slack/install") as page:
            state = page.cookies[COOKIE].value
        redirect = f"{bot.url}/slack/oauth_redirect?code=anything&state="
        async with http.get(redirect + "forged", headers={"Cookie": f"{COOKIE}=forged"}) as forged:
            assert 400 <= forged.status < 500 and "<html" in (await forged.text()).lower()
        async with http.get(redirect + state + "x", headers={"Cookie": f"{COOKIE}={state}"}) as tampered:
            assert 400 <= tampered.status < 500  # the browser's cookie does not match the state sent
        async with http.get(redirect, headers={"Cookie": f"{COOKIE}="}) as missing:
            assert 400 <= missing.status < 500
        # a state that is well formed and this browser's, but past SLACK_INSTALL_STATE_S
        assert bot.frontend.oauth is not None
        bot.frontend.oauth.states.clock = lambda: time.time() + bot.settings.slack_install_state_s + 1
        async with http.get(redirect + state, headers={"Cookie": f"{COOKIE}={state}"}) as expired:
            assert 400 <= expired.status < 500
        bot.frontend.oauth.states.clock = time.time
        # a good install works once; replaying its redirect is refused
        status, _, used, cookie = await install(http, bot, TEAM_ID)
        assert status == 200
        async with http.get(used, headers={"Cookie": f"{COOKIE}={cookie}"}) as replayed:
            assert 400 <= replayed.status < 500
        exchange = slack.calls_to("oauth.v2.access")
        assert len(exchange) == 1  # the refused redirects never reached Slack
        assert [i.team_id for i in await bot.store.installed()] == [TEAM_ID]


async def test_a_rotating_token_is_refreshed_before_it_expires_and_the_new_one_answers(corpus_settings,
                                                                                      slack) -> None:
    slack.token_rotation = True
    slack.token_lifetime_s = 3600  # under SLACK_TOKEN_ROTATION_MINUTES (120): refreshed on the next event
    async with running(corpus_settings, slack) as bot, aiohttp.ClientSession() as http:
        await install(http, bot, TEAM_ID)
        stored = await bot.store.async_find_bot(enterprise_id=None, team_id=TEAM_ID)
        assert stored.bot_token.startswith("xoxe.xoxb-") and stored.bot_refresh_token.startswith("xoxe-1-")
        event = slack.app_mention("How much is the Pro plan?")
        await slack.send_event(event)
        await answered(slack, bot, CHANNEL, event["ts"])
        refreshed = await bot.store.async_find_bot(enterprise_id=None, team_id=TEAM_ID)
    refreshes = [c for c in slack.calls_to("oauth.v2.access", ok=True) if c.params.get("grant_type") == "refresh_token"]
    assert refreshes and refreshes[0].params["refresh_token"] == stored.bot_refresh_token
    assert refreshed.bot_token != stored.bot_token and refreshed.bot_refresh_token != stored.bot_refresh_token
    assert tokens_used(slack, CHANNEL) == {refreshed.bot_token}  # the reply went out with the refreshed token


async def test_uninstalling_removes_that_workspace_only(corpus_settings, slack) -> None:
    async with running(corpus_settings, slack) as bot, aiohttp.ClientSession() as http:
        await install(http, bot, TEAM_ID)
        await install(http, bot, OTHER_TEAM_ID)
        await slack.send_event(slack.app_uninstalled(OTHER_TEAM_ID))  # bolt acks, then its listener deletes
        await until(lambda: bot.store.async_find_bot(enterprise_id=None, team_id=OTHER_TEAM_ID), None)
        assert [i.team_id for i in await bot.store.installed()] == [TEAM_ID]
        event = slack.app_mention("How much is the Pro plan?")
        await slack.send_event(event)
        assert (await answered(slack, bot, CHANNEL, event["ts"]))[-1].text.startswith("*Billing*")
        # tokens_revoked removes the other one the same way
        await slack.send_event(slack.tokens_revoked(TEAM_ID))
        assert await until(bot.store.installed, []) == []


async def test_without_a_key_tokens_are_refused_with_a_sentence(corpus_settings, slack) -> None:
    settings = oauth_settings(corpus_settings, slack, 1, encryption_key=None)
    problems = validate_settings(settings)
    assert any("ENCRYPTION_KEY" in p.message for p in problems)
    with pytest.raises(StartupError, match="ENCRYPTION_KEY"):  # what SlackFrontend calls first in this mode
        build_oauth(settings, AsyncWebClient(base_url=slack.api_url))
    store = SqlInstallationStore(settings)
    try:
        from slack_sdk.oauth.installation_store.models.bot import Bot

        with pytest.raises(TokensRefused, match="ENCRYPTION_KEY"):
            await store.async_save_bot(Bot(team_id=TEAM_ID, bot_token="xoxb-secret", bot_id="B1", bot_user_id="U1",
                                           installed_at=time.time()))
        assert await store.installed() == []
    finally:
        await store.aclose()
    assert "ENCRYPTION_KEY" in NO_KEY and NO_KEY.count(".") <= 2


# --- everything else a workspace's bot does uses that workspace's installed token -----------------------------
STAFF_DEFAULT = "C0STAFF001"  # SLACK_HANDOFF_CHANNEL
WORKSPACE_STAFF = "C0STAFFWS1"  # the workspace's own (`switchboard workspaces set`)
RANDOM_STAFF = "C0STAFFRN1"  # the #random channel's own, in channels.yml: wins over the workspace's
WORKSPACE_ONCALL = "S0CLIENT01"


async def test_oauth_handoffs_staff_buttons_and_files_use_the_workspace_token_and_its_handoff_place(
        corpus_settings, slack, tmp_path) -> None:
    from bots.slack.app import session_key
    from bots.slack.handoff import NOT_STAFF
    from bots.support.desk import ASKED_HERE
    from core.workspaces import workspaces_for
    from tests.fakes.slack import OTHER_CHANNEL, OTHER_USER_ID

    for channel, name in ((STAFF_DEFAULT, "support-staff"), (WORKSPACE_STAFF, "client-staff"),
                          (RANDOM_STAFF, "random-staff")):
        slack.add_channel(channel, name, members=[OTHER_USER_ID])
    channels = tmp_path / "channels.yml"
    channels.write_text(f"channels:\n  - platform: slack\n    channel: {OTHER_CHANNEL}\n"
                        f"    handoff_channel: {RANDOM_STAFF}\n")
    async with running(corpus_settings, slack, slack_handoff_channel=STAFF_DEFAULT, channels_file=channels,
                       slack_handoff_mention="S0DEFAULT1") as bot, aiohttp.ClientSession() as http:
        await install(http, bot, TEAM_ID)
        [token] = slack.tokens_of(TEAM_ID)
        await workspaces_for(bot.frontend.orchestrator).set(
            "slack", TEAM_ID, {"handoff_channel": WORKSPACE_STAFF, "handoff_mention": WORKSPACE_ONCALL})

        # Asking for a person in words: the staff message goes to the workspace's place, pinging its group.
        event = slack.app_mention("can I talk to a human?")
        await slack.send_event(event)
        assert (await answered(slack, bot, CHANNEL, event["ts"]))[-1].text.endswith(ASKED_HERE)
        [staff] = slack.bot_messages(WORKSPACE_STAFF)
        assert slack.pings(staff) == [f"!subteam^{WORKSPACE_ONCALL}"] and slack.bot_messages(STAFF_DEFAULT) == []
        # A channel with its own place in channels.yml keeps it.
        other = slack.app_mention("can I talk to a human?", channel=OTHER_CHANNEL)
        await slack.send_event(other)
        await answered(slack, bot, OTHER_CHANNEL, other["ts"])
        assert len(slack.bot_messages(RANDOM_STAFF)) == 1 and len(slack.bot_messages(WORKSPACE_STAFF)) == 1

        # The staff button: membership is checked, and the notices posted, with the workspace's token.
        key = session_key(TEAM_ID, CHANNEL, event["ts"])
        await slack.send_block_action("handoff_take", key, channel=WORKSPACE_STAFF, message_ts=staff.ts,
                                      user=OTHER_USER_ID, block_id="handoff")
        await slack.wait_for(lambda: "Bob Example" in slack.bot_messages(CHANNEL, event["ts"])[-1].text, timeout=10)
        assert NOT_STAFF not in str([r.body for r in slack.responses])

        # A shared file is looked up and downloaded with the workspace's token.
        shared = slack.add_file("notes.txt", b"Invoice 42 was charged twice.", file_access="check_file_info")
        with_file = slack.app_mention("What does the attached file say about invoices?", files=[shared])
        await slack.send_event(with_file)
        await answered(slack, bot, CHANNEL, with_file["ts"])
    assert [d.status for d in slack.downloads] == [200] and slack.downloads[0].authorization == f"Bearer {token}"
    assert {c.token for c in slack.calls_to("files.info")} == {token}
    for method in ("chat.getPermalink", "users.info", "conversations.members"):
        assert slack.calls_to(method) and {c.token for c in slack.calls_to(method)} == {token}, method
    assert tokens_used(slack, WORKSPACE_STAFF) == {token} and tokens_used(slack, RANDOM_STAFF) == {token}


async def test_doctor_reports_oauth_mode_with_the_installed_workspaces_and_checks_the_key(corpus_settings,
                                                                                         slack) -> None:
    from slack_sdk.oauth.installation_store.models.bot import Bot

    from bots.checks import check_slack

    settings = oauth_settings(corpus_settings, slack, 1)
    store = SqlInstallationStore(settings)
    try:
        for team in (TEAM_ID, OTHER_TEAM_ID):
            await store.async_save_bot(Bot(team_id=team, bot_token=f"xoxb-{team}", bot_id="B1", bot_user_id="U1",
                                           installed_at=time.time()))
    finally:
        await store.aclose()
    [ok] = await check_slack(settings)
    assert ok.ok and "Add to Slack" in ok.detail and "2 workspaces installed" in ok.detail
    [no_key] = await check_slack(settings.model_copy(update={"encryption_key": None}))
    assert not no_key.ok and "ENCRYPTION_KEY" in no_key.detail + (no_key.fix or "")
    other = settings.model_copy(update={"encryption_key": SecretStr(Fernet.generate_key().decode())})
    [wrong_key] = await check_slack(other)
    assert not wrong_key.ok and "2 of them not readable with ENCRYPTION_KEY" in wrong_key.detail
