"""`switchboard doctor` checks for the chat front-ends: settings consistency, and whether Slack and Discord
accept the tokens. `switchboard.doctor` runs them after the core's, so the core stays free of platform code."""

from __future__ import annotations

import aiohttp

from bots.startup import discord_enabled, slack_enabled, validate_settings
from core.doctor import CheckResult
from core.settings import Settings


async def check_chat_settings(settings: Settings) -> list[CheckResult]:
    problems = validate_settings(settings)
    if not problems:
        return [CheckResult("settings", True, "consistent")]
    return [CheckResult("settings", False, p.message, p.fix) for p in problems]


async def check_slack(settings: Settings) -> list[CheckResult]:
    if not slack_enabled(settings) and settings.slack_oauth_enabled:
        return await check_slack_oauth(settings)
    if not slack_enabled(settings):
        return [CheckResult("slack", True, "off (set SLACK_BOT_TOKEN to enable)")]
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient

    client = AsyncWebClient(token=settings.slack_bot_token.get_secret_value(),  # type: ignore[union-attr]
                            base_url=settings.slack_api_url, timeout=10)
    try:
        auth = await client.auth_test()
    except SlackApiError as error:
        return [CheckResult("slack", False, f"Slack refused SLACK_BOT_TOKEN ({error.response.get('error')})",
                            "copy the Bot User OAuth Token (xoxb-…) from OAuth & Permissions")]
    except Exception as exc:  # noqa: BLE001
        return [CheckResult("slack", False, f"cannot reach {settings.slack_api_url}: {type(exc).__name__}",
                            "check the network, or SLACK_API_URL")]
    mode = "Socket Mode" if settings.slack_app_token else "HTTP events at /slack/events"
    return [CheckResult("slack", True, f"bot {auth.get('user')} in workspace {auth.get('team')} ({mode})")]


async def check_slack_oauth(settings: Settings) -> list[CheckResult]:
    """"Add to Slack" mode has no single token to try: ENCRYPTION_KEY must be usable, and every stored
    installation must decrypt with it (a changed key silently un-installs workspaces)."""
    from bots.slack.installations import NO_KEY, SqlInstallationStore, fernet_of

    try:
        if fernet_of(settings.encryption_key) is None:
            return [CheckResult("slack", False, "\"Add to Slack\" mode without ENCRYPTION_KEY", NO_KEY)]
    except ValueError as exc:
        return [CheckResult("slack", False, "\"Add to Slack\" mode: ENCRYPTION_KEY is malformed", str(exc))]
    store = SqlInstallationStore(settings)
    try:
        installed = await store.installed()
        unreadable = [i.team_id or i.enterprise_id for i in installed
                      if await store.async_find_bot(enterprise_id=i.enterprise_id or None, team_id=i.team_id or None,
                                                    is_enterprise_install=not i.team_id) is None]
    except Exception as exc:  # noqa: BLE001 - the database is unreachable or refused us
        return [CheckResult("slack", False, f"\"Add to Slack\" mode: cannot read the installations "
                                            f"({type(exc).__name__})", "check DATABASE_URL or the data directory")]
    finally:
        await store.aclose()
    mode = "Socket Mode" if settings.slack_app_token else "HTTP events at /slack/events"
    count = f"{len(installed)} workspace{'' if len(installed) == 1 else 's'} installed"
    if unreadable:
        return [CheckResult("slack", False, f"\"Add to Slack\" mode: {count}, {len(unreadable)} of them not "
                                            f"readable with ENCRYPTION_KEY ({', '.join(unreadable)})",
                            "restore the key they were stored with, or install the app in them again")]
    return [CheckResult("slack", True, f"\"Add to Slack\" mode: {count}, tokens encrypted with ENCRYPTION_KEY "
                                       f"({mode}; install page /slack/install)")]


async def check_discord(settings: Settings) -> list[CheckResult]:
    if not discord_enabled(settings):
        return [CheckResult("discord", True, "off (set DISCORD_TOKEN to enable)")]
    from discord.http import Route

    token = settings.discord_token.get_secret_value()  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session, session.get(
                f"{Route.BASE}/users/@me", headers={"Authorization": f"Bot {token}"}) as response:
            body = await response.json(content_type=None)
    except Exception as exc:  # noqa: BLE001
        return [CheckResult("discord", False, f"cannot reach Discord: {type(exc).__name__}", "check the network")]
    if response.status == 401:
        return [CheckResult("discord", False, "Discord refused DISCORD_TOKEN (401)",
                            "Developer Portal → your application → Bot → Reset Token, then update .env")]
    if response.status != 200:
        return [CheckResult("discord", False, f"Discord answered {response.status}", "try again later")]
    return [CheckResult("discord", True, f"bot {body.get('username')} (intents are checked when it connects)")]


CHAT_CHECKS = (check_chat_settings, check_slack, check_discord)
