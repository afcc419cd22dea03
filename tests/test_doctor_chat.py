"""`switchboard doctor` for the chat front-ends: settings consistency and tokens checked against the fakes."""

from __future__ import annotations

from pydantic import SecretStr

from bots.checks import check_chat_settings, check_discord, check_slack
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


def test_the_doctor_runs_the_core_checks_then_the_chat_checks() -> None:
    from switchboard.doctor import CHECKS

    assert [check.__name__ for check in CHECKS] == ["check_embeddings", "check_store", "check_checkpoints",
                                                    "check_llm", "check_coordination", "check_replicas", "check_sources",
                                                    "check_chat_settings",
                                                    "check_slack", "check_discord", "check_support"]


async def test_a_check_that_raises_is_reported_and_the_others_still_run(tmp_path) -> None:
    from core.doctor import CheckResult
    from switchboard.doctor import run_checks

    async def broken(settings) -> CheckResult:  # noqa: ANN001
        raise RuntimeError("boom")

    async def fine(settings) -> list[CheckResult]:  # noqa: ANN001
        return [CheckResult("a", True, "ok"), CheckResult("b", True, "ok")]

    results = await run_checks(make_settings(tmp_path), (broken, fine))
    assert [(r.name, r.ok) for r in results] == [("broken", False), ("a", True), ("b", True)]
    assert "boom" in results[0].detail and results[0].fix


def test_the_feedback_command_summarises_votes_and_lists_recent_downvotes(tmp_path, monkeypatch) -> None:
    import json

    from typer.testing import CliRunner

    from bots.feedback import record_feedback
    from switchboard.cli import app

    record_feedback(tmp_path, frontend="slack", session_key="slack:T:C:1.0", vote="up", user="U1")
    record_feedback(tmp_path, frontend="slack", session_key="slack:T:C:2.0", vote="down", user="U2")
    record_feedback(tmp_path, frontend="slack", session_key="slack:T:C:3.0", vote="down", user="U3")
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["feedback", "--json", "--recent", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["total"] == 3 and summary["by_frontend"] == {"slack": {"up": 1, "down": 2}}
    assert [r["session_key"] for r in summary["recent_down"]] == ["slack:T:C:3.0"]
    table = CliRunner().invoke(app, ["feedback"])
    assert table.exit_code == 0 and "slack:T:C:3.0" in table.output and "slack:T:C:2.0" in table.output


async def test_doctor_checks_redis_when_replicas_share_it(tmp_path) -> None:
    from switchboard.doctor import check_coordination

    assert (await check_coordination(make_settings(tmp_path))).ok  # in-process: nothing to reach
    down = await check_coordination(make_settings(tmp_path, redis_url=SecretStr("redis://:hunter2@127.0.0.1:1/0")))
    assert not down.ok and "hunter2" not in down.detail and "REDIS_URL" in down.fix
