"""`switchboard doctor` for the chat front-ends: settings consistency and tokens checked against the fakes."""

from __future__ import annotations

from pydantic import SecretStr

from bots.checks import check_chat_settings, check_discord, check_slack
from core.doctor import EXTRA_CHECKS
from tests.conftest import make_settings
from tests.fakes.discord import FakeDiscord
from tests.fakes.slack import FakeSlack

DISCORD_TOKEN = "MTAxMjM0NTY3ODkwMTIzNDU2Nzg5.GhIjKl.abcdefghijklmnopqrstuvwxyz0123"


async def test_slack_token_accepted_and_refused(tmp_path) -> None:
    async with FakeSlack() as slack:
        good = make_settings(tmp_path, slack_bot_token=SecretStr(slack.bot_token), slack_api_url=slack.api_url,
                             slack_app_token=SecretStr(slack.app_token))
        [ok] = await check_slack(good)
        assert ok.ok and "Socket Mode" in ok.detail and "switchboard" in ok.detail
        bad = good.model_copy(update={"slack_bot_token": SecretStr("xoxb-wrong")})
        [refused] = await check_slack(bad)
        assert not refused.ok and "invalid_auth" in refused.detail and "OAuth & Permissions" in refused.fix
        assert "xoxb-wrong" not in refused.detail + refused.fix  # secrets never printed


async def test_discord_token_accepted_and_refused(tmp_path) -> None:
    async with FakeDiscord(token=DISCORD_TOKEN):
        [ok] = await check_discord(make_settings(tmp_path, discord_token=SecretStr(DISCORD_TOKEN)))
        assert ok.ok and "switchboard" in ok.detail
        [refused] = await check_discord(make_settings(tmp_path, discord_token=SecretStr(DISCORD_TOKEN + "x")))
        assert not refused.ok and "401" in refused.detail and "Reset Token" in refused.fix


async def test_off_front_ends_pass_and_settings_problems_each_get_a_fix(tmp_path) -> None:
    settings = make_settings(tmp_path)
    assert (await check_slack(settings))[0].ok and (await check_discord(settings))[0].ok
    broken = make_settings(tmp_path, slack_bot_token=SecretStr("not-a-token"))
    results = await check_chat_settings(broken)
    assert results and all(not r.ok and r.fix for r in results)


def test_the_cli_registers_the_chat_checks() -> None:
    import core.cli  # noqa: F401 - loading the CLI registers the front-ends' commands and checks

    assert {check.__name__ for check in EXTRA_CHECKS} >= {"check_chat_settings", "check_slack", "check_discord"}
