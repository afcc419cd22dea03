"""The support loop on Slack, end to end: the real slack-bolt and slack_sdk against the loopback fake Slack, the
real offline orchestrator and the real support store (SQLite in the test's data directory).

- an unanswerable question gets the honest answer and a "Talk to a person" button;
- the button posts one staff message in the staff channel that pings only the on-call group (the user's own
  `<!here>` and mentions stay text), with the question, the answer, the agent, the confidence and the thread's
  permalink, and the user is told what happens next;
- while handed off the bot is silent in the thread, also after a restart (a new front-end and orchestrator on
  the same data directory); its messages are kept as notes;
- the staff buttons refuse anyone outside the staff channel (ephemeral), "Take it" names who took it, and
  "Hand back to the bot" makes the bot answer again;
- asking in words ("can I talk to a human?") hands off too; a channel limited to billing routes only to billing
  and hands off to its own staff channel.
"""

from __future__ import annotations

import asyncio

import pytest
from pydantic import SecretStr

from bots.metrics import REGISTRY
from bots.slack.app import SlackFrontend, session_key
from bots.slack.handoff import NOT_STAFF
from bots.slack.surface import SlackLimits
from bots.support.desk import ASKED_HERE, RETURNED_NOTICE, desk_for
from core.orchestrator import build_orchestrator
from tests.fakes.slack import (
    CHANNEL,
    OTHER_USER_ID,
    TEAM_ID,
    USER_ID,
    FakeSlack,
    RateLimit,
)

STAFF = "C0STAFF001"
BILLING = "C0BILLING1"
BILLING_STAFF = "C0STAFF002"
ONCALL = "S0ONCALL01"
UNANSWERABLE = "What's the capital of Australia?"


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def slack():
    async with FakeSlack(limits={"chat.update": RateLimit(per_minute=1200, burst=20),
                                 "chat.postMessage": RateLimit(per_minute=1200, burst=20)}) as fake:
        fake.add_channel(STAFF, "support-staff", members=[OTHER_USER_ID])  # bob is staff, alice is not
        fake.add_channel(BILLING, "billing-help")
        fake.add_channel(BILLING_STAFF, "billing-staff", members=[OTHER_USER_ID])
        yield fake


class Running:
    """The Slack front-end and its orchestrator, restartable on the same data directory."""

    def __init__(self, settings, slack: FakeSlack) -> None:
        self.settings = settings.model_copy(update={
            "slack_bot_token": SecretStr(slack.bot_token), "slack_app_token": SecretStr(slack.app_token),
            "slack_api_url": slack.api_url, "slack_edit_interval_s": 0.05,
            "slack_handoff_channel": STAFF, "slack_handoff_mention": ONCALL})
        self.slack = slack
        self.frontend: SlackFrontend | None = None
        self.orchestrator = None

    async def start(self) -> SlackFrontend:
        self.orchestrator = await build_orchestrator(self.settings)
        self.frontend = SlackFrontend(self.settings, self.orchestrator,
                                      limits=SlackLimits(updates_per_window=20, window_s=1.0))
        opened = self.slack.connections_opened
        await self.frontend.start()
        await self.slack.wait_for(lambda: self.slack.connections_opened > opened)
        await self.slack.wait_for_connection()
        return self.frontend

    async def stop(self) -> None:
        if self.frontend is not None:
            await self.frontend.stop()
            await self.orchestrator.aclose()
            self.frontend = None

    async def settled(self) -> None:
        """Every answer and handoff in flight has finished, and the turns are recorded."""
        await asyncio.wait_for(self.frontend.idle(), 30)
        await desk_for(self.orchestrator).flush()


@pytest.fixture
async def running(corpus_settings, slack, tmp_path):
    channels = tmp_path / "channels.yml"
    channels.write_text(f"channels:\n  - platform: slack\n    channel: {BILLING}\n    agents: [billing]\n"
                        f"    handoff_channel: {BILLING_STAFF}\n")
    bot = Running(corpus_settings.model_copy(update={"channels_file": channels}), slack)
    await bot.start()
    yield bot
    await bot.stop()


async def ask(slack: FakeSlack, bot: Running, question: str, channel: str = CHANNEL):
    event = slack.app_mention(question, channel=channel)
    await slack.send_event(event)
    await slack.wait_for(lambda: slack.bot_messages(channel, event["ts"]), timeout=30)
    await bot.settled()
    return event, slack.bot_messages(channel, event["ts"])[-1]


async def eventually(read, expected, timeout: float = 10.0) -> None:
    """Read the store until it holds `expected`: bolt runs a listener after its ack, and a message the bot keeps
    quiet about leaves nothing on Slack to wait for."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (found := await read()) != expected:
        assert asyncio.get_running_loop().time() < deadline, found
        await asyncio.sleep(0.02)


def staff_messages(slack: FakeSlack, channel: str = STAFF):
    return slack.bot_messages(channel)


def all_text(message) -> str:
    import json

    return message.text + json.dumps(message.blocks or [])


async def test_a_handoff_from_the_button_to_hand_back(running, slack) -> None:
    # 1. The honest answer, and the offer.
    event, reply = await ask(slack, running, f"<!here> <@{OTHER_USER_ID}> {UNANSWERABLE}")
    key = session_key(TEAM_ID, CHANNEL, event["ts"])
    assert "I don't know the answer" in slack.final_text(CHANNEL, reply.ts)
    buttons = [b for block in reply.blocks if block["type"] == "actions" for b in block["elements"]]
    assert [b["action_id"] for b in buttons][-1] == "handoff_request" and buttons[-1]["value"] == key
    unanswered = metric("switchboard_unanswered_total", platform="slack", agent="technical") + metric(
        "switchboard_unanswered_total", platform="slack", agent="policy") + metric(
        "switchboard_unanswered_total", platform="slack", agent="billing")
    assert unanswered >= 1
    handoffs = metric("switchboard_handoffs_total", platform="slack", agent=reply_agent(running, key),
                      trigger="button")

    # 2. The button: one staff message, pinging only the on-call group.
    await slack.send_block_action("handoff_request", key, message_ts=reply.ts, block_id="feedback")
    [staff] = await slack.wait_for(lambda: staff_messages(slack), timeout=10)
    await running.settled()
    assert slack.pings(staff) == [f"!subteam^{ONCALL}"]
    text = all_text(staff)
    assert "Alice Example (U0USER0001)" in text and UNANSWERABLE in text and "&lt;!here&gt;" in text
    assert "I don't know the answer" in text and "Confidence:" in text
    assert f"archives/{CHANNEL}/p{event['ts'].replace('.', '')}" in text  # the thread's permalink
    assert slack.bot_messages(CHANNEL, event["ts"])[-1].text == ASKED_HERE
    assert metric("switchboard_handoffs_total", platform="slack", agent=reply_agent(running, key),
                  trigger="button") == handoffs + 1
    # A second click posts nothing more.
    await slack.send_block_action("handoff_request", key, message_ts=reply.ts, block_id="feedback")
    await running.settled()
    assert len(staff_messages(slack)) == 1

    # 3. Quiet in the thread while handed off, across a restart.
    before = len(slack.bot_messages(CHANNEL, event["ts"]))
    await slack.send_event(slack.thread_message("hello? anyone?", thread_ts=event["ts"]))
    await running.settled()
    await running.stop()
    await running.start()
    await slack.send_event(slack.thread_message("still waiting", thread_ts=event["ts"]))

    async def notes() -> list[str]:
        return [e.text for e in await desk_for(running.orchestrator).store.events(session_key=key) if e.kind == "note"]

    await eventually(lambda: notes(), ["hello? anyone?", "still waiting"])
    await running.settled()
    assert len(slack.bot_messages(CHANNEL, event["ts"])) == before

    # 4. Staff buttons: others are refused, only for themselves.
    await slack.send_block_action("handoff_take", key, channel=STAFF, message_ts=staff.ts, user=USER_ID,
                                  block_id="handoff")
    [refusal] = await slack.wait_for(lambda: slack.responses, timeout=5)
    assert refusal.body["response_type"] == "ephemeral" and refusal.body["text"] == NOT_STAFF
    assert (await desk_for(running.orchestrator).store.get_handoff(key)).status == "requested"
    await slack.send_block_action("handoff_take", key, channel=STAFF, message_ts=staff.ts, user=OTHER_USER_ID,
                                  block_id="handoff")
    await slack.wait_for(lambda: "Taken by Bob Example" in all_text(slack.message(STAFF, staff.ts)), timeout=5)
    await slack.wait_for(lambda: "Bob Example" in slack.bot_messages(CHANNEL, event["ts"])[-1].text, timeout=5)

    # 5. Hand back: the bot answers again.
    handed_back = metric("switchboard_resolutions_total", platform="slack", agent=reply_agent(running, key),
                         how="handed_back")
    await slack.send_block_action("handoff_back", key, channel=STAFF, message_ts=staff.ts, user=OTHER_USER_ID,
                                  block_id="handoff")
    await slack.wait_for(lambda: slack.bot_messages(CHANNEL, event["ts"])[-1].text == RETURNED_NOTICE, timeout=5)
    assert not any(b["type"] == "actions" for b in slack.message(STAFF, staff.ts).blocks)
    assert metric("switchboard_resolutions_total", platform="slack", agent=reply_agent(running, key),
                  how="handed_back") == handed_back + 1
    count = len(slack.bot_messages(CHANNEL, event["ts"]))
    await slack.send_event(slack.thread_message("What does the Enterprise plan cost?", thread_ts=event["ts"]))
    await slack.wait_for(lambda: len(slack.bot_messages(CHANNEL, event["ts"])) > count, timeout=30)
    await running.settled()
    assert "$1,200" in slack.final_text(CHANNEL, slack.bot_messages(CHANNEL, event["ts"])[-1].ts)


def reply_agent(running: Running, key: str) -> str:
    """The agent of the session's last answer (the declined turn's, which the handoff is counted under)."""
    path = running.settings.data_dir / "support.sqlite"
    import sqlite3

    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT agent FROM switchboard_support_events WHERE session_key = ? "
                           "AND kind IN ('answered', 'declined') ORDER BY at DESC", (key,)).fetchone()
    return row[0] if row else "none"


async def test_asking_in_words_hands_off_without_routing(running, slack) -> None:
    _, reply = await ask(slack, running, "can I talk to a human?")
    assert slack.final_text(CHANNEL, reply.ts).endswith(ASKED_HERE)
    [staff] = staff_messages(slack)
    assert "their own words" in all_text(staff) and slack.pings(staff) == [f"!subteam^{ONCALL}"]


async def test_a_billing_channel_routes_to_billing_and_hands_off_to_its_own_staff(running, slack) -> None:
    event, reply = await ask(slack, running, "My API integration keeps timing out. How do I fix this?",
                             channel=BILLING)
    assert slack.final_text(BILLING, reply.ts).startswith("*Billing*")
    await slack.send_block_action("handoff_request", session_key(TEAM_ID, BILLING, event["ts"]), channel=BILLING,
                                  message_ts=reply.ts, block_id="feedback")
    [staff] = await slack.wait_for(lambda: staff_messages(slack, BILLING_STAFF), timeout=10)
    assert staff_messages(slack) == [] and slack.pings(staff) == [f"!subteam^{ONCALL}"]
