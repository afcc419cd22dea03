"""Handoffs on Discord: "Talk to a person" under answers, the staff message in DISCORD_HANDOFF_CHANNEL and its
buttons, the thread's jump URL and the notices in the user's thread.

Like the feedback buttons (`bots.discord.feedback`), every button is a `discord.ui.DynamicItem` whose
`custom_id` carries what a click needs (`sb:ho:<session key>` for the user's, `sb:hs:<take|back|resolve>:<key>`
for the staff's), so buttons under messages sent before a restart keep working and nothing is kept per message.

The staff message pings only the on-call role (DISCORD_HANDOFF_ROLE, or the channel's `handoff_role` from the
channels file): it is sent with `AllowedMentions(roles=[that role])` and nothing else, so `@everyone`, a user or
another role written in a question stays text. The staff buttons answer only holders of that role; anyone else
gets an ephemeral refusal that pings nobody.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import discord

from bots.discord.surface import NO_MENTIONS
from bots.support.desk import HandoffRequest, SupportDesk
from bots.support.store import HandoffRecord

if TYPE_CHECKING:
    from bots.discord.bot import DiscordFrontend

log = logging.getLogger(__name__)

ASK_TEMPLATE = re.compile(r"sb:ho:(?P<key>.+)", re.S)
STAFF_TEMPLATE = re.compile(r"sb:hs:(?P<action>take|back|resolve):(?P<key>.+)", re.S)
FRONTEND_ATTRIBUTE = "switchboard_frontend"  # set on the client by `install`
NOT_STAFF = "Only members of the staff role can change a handoff."
WAITING = "⏳ Waiting for someone to take it"
ANSWER_CHARS = 700
MAX_CONTENT = 2000


def _frontend(interaction: discord.Interaction) -> DiscordFrontend | None:
    return getattr(interaction.client, FRONTEND_ATTRIBUTE, None)


class AskForPersonButton(discord.ui.DynamicItem[discord.ui.Button], template=ASK_TEMPLATE):  # type: ignore[call-arg]
    """"Talk to a person" under an answer (its conversation's session key in the custom_id)."""

    def __init__(self, session_key: str) -> None:
        super().__init__(discord.ui.Button(style=discord.ButtonStyle.primary, emoji="🙋", label="Talk to a person",
                                           custom_id=f"sb:ho:{session_key}"))
        self.session_key = session_key

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> AskForPersonButton:
        return cls(match["key"])

    async def callback(self, interaction: discord.Interaction) -> None:
        frontend = _frontend(interaction)
        await interaction.response.defer()  # at once (3 s): what happens next is said in the thread
        if frontend is None or frontend.support is None:
            return
        channel: Any = interaction.channel
        parent = getattr(channel, "parent_id", None)
        request = HandoffRequest("discord", self.session_key, str(interaction.user.id),
                                 str(parent or interaction.channel_id or "") or None,
                                 {"guild_id": interaction.guild_id, "channel_id": interaction.channel_id}, "button")
        text = await frontend.support.request(request)
        await frontend.staff.tell_thread(request.where, text)
        forums = getattr(frontend, "forums", None)
        if forums is not None:  # in a forum post: "Needs a person", as for a handoff asked for in words
            await forums.handed_off(channel, self.session_key)


class StaffButton(discord.ui.DynamicItem[discord.ui.Button], template=STAFF_TEMPLATE):  # type: ignore[call-arg]
    """Take it / Hand back to the bot / Resolved, on the staff message."""

    LABELS = {"take": ("🙋", "Take it", discord.ButtonStyle.primary),
              "back": ("↩️", "Hand back to the bot", discord.ButtonStyle.secondary),
              "resolve": ("✅", "Resolved", discord.ButtonStyle.success)}

    def __init__(self, action: str, session_key: str) -> None:
        emoji, label, style = self.LABELS[action]
        super().__init__(discord.ui.Button(style=style, emoji=emoji, label=label,
                                           custom_id=f"sb:hs:{action}:{session_key}"))
        self.action = action
        self.session_key = session_key

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> StaffButton:
        return cls(match["action"], match["key"])

    async def callback(self, interaction: discord.Interaction) -> None:
        frontend = _frontend(interaction)
        if frontend is None or frontend.support is None or not await frontend.staff.is_staff(interaction,
                                                                                              self.session_key):
            await interaction.response.send_message(NOT_STAFF, ephemeral=True, allowed_mentions=NO_MENTIONS)
            return
        await interaction.response.defer()  # the staff message itself is edited by the desk
        user = interaction.user
        result = await frontend.support.act(self.action, self.session_key, str(user.id),
                                            f"{user.display_name} ({user.id})")
        if result.record is None:
            await interaction.followup.send(result.message, ephemeral=True, allowed_mentions=NO_MENTIONS)


def staff_view(session_key: str) -> discord.ui.View:
    """The staff buttons; `timeout=None` for the same reason as the feedback view's."""
    view = discord.ui.View(timeout=None)
    for action in StaffButton.LABELS:
        view.add_item(StaffButton(action, session_key))
    return view


def ticket_text(ticket: Mapping[str, Any], *, role: str | None, status: str) -> str:
    """The staff message: at most 2,000 characters, the role's mention first (the only one that pings)."""
    ping = f"<@&{role}> " if role else ""
    user = (ticket.get("user") or {}).get("name") or (ticket.get("user") or {}).get("id") or "someone"
    confidence = ticket.get("confidence")
    answer = (ticket.get("answer") or "").strip()
    if len(answer) > ANSWER_CHARS:
        answer = answer[:ANSWER_CHARS].rsplit(" ", 1)[0] + " …"
    lines = [f"{ping}🙋 **{user} asked for a person**",
             f"**Agent:** {ticket.get('agent_label') or ticket.get('agent') or '—'} · **Confidence:** "
             + (f"{confidence:.2f}" if isinstance(confidence, (int, float)) else "—")
             + f" · asked by {'the button' if ticket.get('trigger') == 'button' else 'their own words'}",
             "**Question(s):**", *(f"> {q[:300]}" for q in ticket.get("questions") or ["(no question yet)"]),
             "**What the bot answered" + (" (it declined: not in the knowledge base)" if ticket.get("declined")
                                          else "") + ":**",
             *(f"> {line}" for line in (answer or "nothing yet").splitlines()[:12])]
    sources = ticket.get("sources") or []
    if sources:
        lines.append("-# Sources: " + ", ".join(s.get("title") or s.get("source") or "" for s in sources))
    if ticket.get("link"):
        lines.append(f"Thread: {ticket['link']}")
    lines.append(f"-# {status}")
    text = "\n".join(lines)
    return text if len(text) <= MAX_CONTENT else text[: MAX_CONTENT - 1] + "…"


class DiscordStaff:
    """The support desk's `StaffPlace` on Discord (see the module docstring)."""

    platform = "discord"

    def __init__(self, frontend: DiscordFrontend) -> None:
        self.frontend = frontend
        settings = frontend.settings
        self.default_channel = str(settings.discord_handoff_channel) if settings.discord_handoff_channel else None
        self.default_mention = str(settings.discord_handoff_role) if settings.discord_handoff_role else None

    @property
    def client(self) -> Any:
        if self.frontend.client is None:
            raise RuntimeError("the Discord client is not running")
        return self.frontend.client

    async def thread_link(self, where: Mapping[str, Any]) -> str:
        return f"https://discord.com/channels/{where.get('guild_id') or '@me'}/{where.get('channel_id')}"

    async def user_label(self, user: str | None) -> str:
        """"alice (123)": named, never a mention."""
        if not user:
            return "someone"
        found = self.client.get_user(int(user))
        if found is None:
            try:
                found = await self.client.fetch_user(int(user))
            except discord.HTTPException:
                return user
        return f"{found.display_name} ({user})"

    async def post_ticket(self, channel: str, mention: str | None, ticket: dict[str, Any]) -> dict[str, Any]:
        allowed = discord.AllowedMentions(everyone=False, users=False, replied_user=False,
                                          roles=[discord.Object(int(mention))] if mention else False)
        message = await self.client.get_partial_messageable(int(channel)).send(
            ticket_text(ticket, role=mention, status=WAITING), view=staff_view(ticket["session_key"]),
            allowed_mentions=allowed)
        return {"platform": "discord", "channel_id": str(channel), "message_id": str(message.id), "mention": mention}

    async def show_status(self, record: HandoffRecord, status_line: str) -> None:
        staff = record.staff
        message = self.client.get_partial_messageable(int(staff["channel_id"])).get_partial_message(
            int(staff["message_id"]))
        await message.edit(content=ticket_text(record.ticket, role=staff.get("mention"), status=status_line),
                           view=staff_view(record.session_key) if record.open else None,
                           allowed_mentions=NO_MENTIONS)

    async def tell_thread(self, where: Mapping[str, Any], text: str) -> None:
        if where.get("channel_id"):
            await self.client.get_partial_messageable(int(where["channel_id"])).send(text, allowed_mentions=NO_MENTIONS)

    async def is_staff(self, interaction: discord.Interaction, session_key: str) -> bool:
        """Whether the presser holds the staff role: DISCORD_HANDOFF_ROLE, or the role this handoff's staff
        message pinged (a channel's own `handoff_role`)."""
        roles = {r.id for r in getattr(interaction.user, "roles", [])}
        allowed = {int(self.default_mention)} if self.default_mention else set()
        desk = self.frontend.support
        record = await desk.store.get_handoff(session_key) if desk is not None else None
        if record is not None and record.staff.get("mention"):
            allowed.add(int(record.staff["mention"]))
        return bool(roles & allowed)


def install(client: discord.Client, frontend: DiscordFrontend) -> None:
    """Make `client` answer the handoff buttons, including those sent before a restart."""
    setattr(client, FRONTEND_ATTRIBUTE, frontend)
    client.add_dynamic_items(AskForPersonButton, StaffButton)


def register(desk: SupportDesk | None, frontend: DiscordFrontend) -> DiscordStaff:
    """The front-end's staff place, registered with its desk (when it has one)."""
    staff = DiscordStaff(frontend)
    if desk is not None:
        desk.register(staff)
    return staff
