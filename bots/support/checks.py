"""The support loop's settings, checked at start-up (`bots.startup.validate_settings`, so `switchboard run` and
`switchboard doctor` both say it) and its store checked by `switchboard doctor` (`check_support`).

Each problem is one sentence with its fix: a webhook nobody can verify, a staff channel whose buttons nobody may
press, ids that cannot be Slack's or Discord's.
"""

from __future__ import annotations

import re
from typing import Any

from bots.startup import Problem
from core.doctor import CheckResult

_SLACK_CHANNEL = re.compile(r"^[CG][A-Z0-9]{2,}$")
_SLACK_GROUP = re.compile(r"^S[A-Z0-9]{2,}$")


def support_problems(settings: Any) -> list[Problem]:
    problems: list[Problem] = []
    url = settings.handoff_webhook_url
    if url and not re.match(r"^https?://", url):
        problems.append(Problem(f"HANDOFF_WEBHOOK_URL ({url}) is not an http(s) URL.",
                                "Set it to the https:// address that receives handoffs, or leave it empty."))
    if url and not (settings.handoff_webhook_secret and settings.handoff_webhook_secret.get_secret_value()):
        problems.append(Problem("HANDOFF_WEBHOOK_URL is set without HANDOFF_WEBHOOK_SECRET, so the receiver could "
                                "not verify the handoffs it gets.",
                                "Set HANDOFF_WEBHOOK_SECRET to a long random string shared with the receiver."))
    if settings.slack_handoff_channel and not _SLACK_CHANNEL.match(settings.slack_handoff_channel):
        problems.append(Problem(f"SLACK_HANDOFF_CHANNEL ({settings.slack_handoff_channel}) is not a channel id.",
                                "Use the channel's id (C… or G…: channel details → About), not its name."))
    if settings.slack_handoff_mention and not _SLACK_GROUP.match(settings.slack_handoff_mention):
        problems.append(Problem(f"SLACK_HANDOFF_MENTION ({settings.slack_handoff_mention}) is not a user group id.",
                                "Use the on-call user group's id (S…), or leave it empty to ping nobody."))
    if settings.discord_handoff_channel and not settings.discord_handoff_role:
        problems.append(Problem("DISCORD_HANDOFF_CHANNEL is set without DISCORD_HANDOFF_ROLE, so nobody could press "
                                "the staff buttons (only holders of that role may).",
                                "Set DISCORD_HANDOFF_ROLE to the staff role's id."))
    return problems


async def check_support(settings: Any) -> CheckResult:
    """Where handoffs go, and whether their store opens (SQLite in the data directory, or DATABASE_URL's)."""
    from bots.support.store import support_store

    store = support_store(settings)
    try:
        await store.setup()
    except Exception as exc:  # noqa: BLE001 - the sentence is the fix (never the password)
        return CheckResult("support", False, f"the handoff store cannot be opened: {exc}",
                           "check DATABASE_URL, or that the data directory is writable")
    finally:
        await store.aclose()
    places = [f"Slack {settings.slack_handoff_channel}" if settings.slack_handoff_channel else "",
              f"Discord {settings.discord_handoff_channel}" if settings.discord_handoff_channel else "",
              "the webhook" if settings.handoff_webhook_url else ""]
    where = ", ".join(p for p in places if p) or "nowhere (the bot tells users to write to SUPPORT_EMAIL)"
    return CheckResult("support", True, f"handoffs go to {where}; kept in {store.where}; decline below "
                                        f"confidence {settings.confidence_threshold}")
