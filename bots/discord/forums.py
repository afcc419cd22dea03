"""Discord forum channels as a support desk: every new post in a listed forum is answered in its own thread.

Which forums: DISCORD_FORUM_CHANNELS (forum channel ids, or `all`). A post there is a thread whose first message
has the thread's id; the bot answers it without a mention (the post's title and its text are the question), and
every later message in the post is answered as in any bot thread (session key `discord:thread:<post id>`, the
forum is the `channel` for per-channel agent limits). A post in a forum not listed is left alone unless someone
mentions the bot there, as in any thread.

Tags, when the forum defines them (matched by name, case-insensitively): after an answer lands the bot applies
"Answered"; when the conversation is handed to a person (`bots.support`), asked for in words or with the "Talk to a
person" button (`bots.discord.handoff` calls `handed_off`), it applies "Needs a person" instead. Under
the answer a "Solved" button lets the post's author or a moderator (Manage Threads) apply "Solved" and close
(archive) the post; anyone else is told, privately, who can. A forum without such tags is answered all the same.

Permissions: tags and archiving need Manage Threads on the forum. Without it the answer still lands, the tag is
skipped, and the log says once per forum which permission to grant. A post deleted before its answer lands
ends the reply quietly (the surface reports the channel gone; tagging a deleted post is skipped).
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any

import discord

from bots.discord.conversation import is_allowed, thread_key
from bots.discord.inbound import ANSWERED_TYPES, PLATFORM, Place, question_of
from bots.discord.surface import NO_MENTIONS, ChannelSurface
from bots.pipeline import Inbound, intent_of

if TYPE_CHECKING:
    from bots.discord.bot import DiscordFrontend

log = logging.getLogger(__name__)

ANSWERED_TAGS = ("answered",)
SOLVED_TAGS = ("solved", "resolved")
NEEDS_PERSON_TAGS = ("needs a person", "needs a human", "needs staff")
SOLVED_TEMPLATE = re.compile(r"sb:solved:(?P<thread>\d+)")
MAX_TAGS = 5  # Discord's limit of tags on one post
ONLY_AUTHOR = "Only the post's author or a moderator (Manage Threads) can mark it solved."
SOLVED = "✅ Marked as solved. Thanks! This post is now closed; open a new post for anything else."
CANNOT_CLOSE = "I couldn't close this post: I need the Manage Threads permission in this forum."
MISSING_PERMISSION = ("discord: cannot tag or close posts in forum %s: grant the bot the Manage Threads "
                      "permission there (answers are still posted)")


def listed(setting: Any, forum_id: int) -> bool:
    """Whether DISCORD_FORUM_CHANNELS covers this forum (`all`, or its id in the list)."""
    if setting == "all":
        return True
    return forum_id in (setting or ())


def forum_of(channel: Any) -> discord.ForumChannel | None:
    """The forum a thread is a post of, or None for anything else."""
    parent = getattr(channel, "parent", None) if isinstance(channel, discord.Thread) else None
    return parent if isinstance(parent, discord.ForumChannel) else None


def find_tag(forum: discord.ForumChannel, names: tuple[str, ...]) -> discord.ForumTag | None:
    """The forum's tag named one of `names` (case-insensitive), if it defines one."""
    for tag in forum.available_tags:
        if tag.name.strip().lower() in names:
            return tag
    return None


def post_question(message: discord.Message, me_id: int) -> str:
    """The question a message in a post asks: its text; for the post's first message, the title too (a post's
    title is often the question itself)."""
    text = question_of(message, me_id)
    thread = message.channel
    if message.id == getattr(thread, "id", None):
        title = (getattr(thread, "name", "") or "").strip()
        if title and not text.lower().startswith(title.lower().rstrip("?.! ")):
            return f"{title}\n\n{text}".strip()
    return text


class SolvedButton(discord.ui.DynamicItem[discord.ui.Button], template=SOLVED_TEMPLATE):  # type: ignore[call-arg]
    """"Solved" under an answer in a forum post; the post's id is in the custom_id, so it works after restarts."""

    def __init__(self, thread_id: int) -> None:
        super().__init__(discord.ui.Button(style=discord.ButtonStyle.success, emoji="✅", label="Solved",
                                           custom_id=f"sb:solved:{thread_id}"))
        self.thread_id = thread_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> SolvedButton:
        return cls(int(match["thread"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        forums: ForumDesk | None = getattr(getattr(interaction.client, "frontend", None), "forums", None)
        if forums is not None:
            await forums.solve(interaction, self.thread_id)


class ForumPostSurface(ChannelSurface):
    """The usual channel surface in a post, with "Solved" beside the feedback buttons of the final answer."""

    def __init__(self, thread: discord.Thread, **options: Any) -> None:
        super().__init__(thread, **options)
        self.thread_id = thread.id

    def _buttons(self, view: Any) -> discord.ui.View | None:
        buttons = super()._buttons(view)
        if buttons is not None:
            buttons.add_item(SolvedButton(self.thread_id))
        return buttons


class ForumDesk:
    """Forum posts for one Discord front-end: which messages are its, answering them, tags and "Solved"."""

    def __init__(self, frontend: DiscordFrontend) -> None:
        self.frontend = frontend
        self._warned: set[int] = set()  # forums whose missing permission was logged already

    @property
    def setting(self) -> Any:
        return self.frontend.settings.discord_forum_channels

    def install(self, client: discord.Client) -> None:
        """Make `client` answer clicks on "Solved", including under answers sent before a restart."""
        client.add_dynamic_items(SolvedButton)

    def claims(self, message: discord.Message) -> bool:
        """Whether the message is in a post of a listed forum (then only this desk answers it)."""
        forum = forum_of(message.channel)
        return forum is not None and listed(self.setting, forum.id)

    def inbound(self, message: discord.Message, me_id: int) -> Inbound | None:
        """A message in a listed forum's post as an inbound question (no mention needed), or None."""
        if message.author.id == me_id or message.author.bot or message.type not in ANSWERED_TYPES:
            return None
        thread: Any = message.channel
        settings = self.frontend.settings
        if message.guild is None or not is_allowed(settings.discord_allowed_guilds, settings.discord_allowed_channels,
                                                   guild_id=message.guild.id, channel_id=thread.id,
                                                   parent_id=thread.parent_id):
            return None
        return Inbound(platform=PLATFORM, session_key=thread_key(thread.id), text=post_question(message, me_id),
                       user=str(message.author.id), place=Place("thread", message), channel=str(thread.parent_id))

    async def answer(self, inbound: Inbound) -> None:
        """Answer in the post, then tag it: "Needs a person" after a handoff, else "Answered" once it landed."""
        frontend = self.frontend
        started = time.monotonic()
        message: discord.Message = inbound.place.message
        if not await frontend._first_delivery("message", message.id):
            return
        thread: Any = message.channel
        frontend.conversations.remember([message.id], inbound.session_key)
        with frontend.budgets.using(thread.id) as budget:
            surface = ForumPostSurface(thread, max_chars=frontend.settings.discord_max_chars,
                                       session_key=inbound.session_key, budget=budget)
            await frontend._answer(inbound, surface, started)
        if intent_of(inbound.text) != "question":
            return
        support = frontend.support
        if support is not None and await support.quiet(inbound.session_key):
            await self.tag(thread, NEEDS_PERSON_TAGS, drop=ANSWERED_TAGS)
        elif surface._texts:  # something landed in the post
            await self.tag(thread, ANSWERED_TAGS)

    async def handed_off(self, channel: Any, session_key: str) -> bool:
        """Tag a listed forum's post "Needs a person" (dropping "Answered") when its conversation is now with a
        person: called after the "Talk to a person" button, whose handoff does not pass through `answer`. False
        for anything but such a post, or when nothing was handed off (no staff place: the user was told to write
        in) or Discord refused."""
        forum = forum_of(channel)
        support = self.frontend.support
        if forum is None or not listed(self.setting, forum.id) or support is None:
            return False
        if not await support.quiet(session_key):
            return False
        return await self.tag(channel, NEEDS_PERSON_TAGS, drop=ANSWERED_TAGS)

    async def tag(self, thread: Any, names: tuple[str, ...], *, drop: tuple[str, ...] = (),
                  archive: bool = False) -> bool:
        """Apply the forum's tag called one of `names` (dropping those named in `drop`), and archive if asked.
        False when Discord refused (the permission is logged once per forum) or the post is gone."""
        forum = forum_of(thread)
        if forum is None:
            return False
        tag = find_tag(forum, names)
        current = [t for t in thread.applied_tags if t.name.strip().lower() not in drop]
        changes: dict[str, Any] = {}
        if tag is not None and tag not in current:
            changes["applied_tags"] = current[:MAX_TAGS - 1] + [tag]  # Discord allows five tags on a post
        elif len(current) != len(thread.applied_tags):
            changes["applied_tags"] = current
        if archive:
            changes["archived"] = True
        if not changes:
            return True
        try:
            await thread.edit(**changes)
        except discord.Forbidden:
            if forum.id not in self._warned:
                self._warned.add(forum.id)
                log.warning(MISSING_PERMISSION, forum.id)
            return False
        except discord.NotFound:
            log.info("discord: post %s is gone; not tagged", thread.id)
            return False
        except discord.HTTPException as exc:
            log.warning("discord: tagging post %s failed (%s)", thread.id, exc)
            return False
        return True

    async def solve(self, interaction: discord.Interaction, thread_id: int) -> None:
        """"Solved": by the post's author or a moderator, apply "Solved" and close the post; others are told."""
        thread: Any = interaction.channel
        if not isinstance(thread, discord.Thread) or thread.id != thread_id:
            thread = interaction.client.get_channel(thread_id)
        if not isinstance(thread, discord.Thread):
            await interaction.response.send_message(CANNOT_CLOSE, ephemeral=True, allowed_mentions=NO_MENTIONS)
            return
        moderator = bool(getattr(interaction.permissions, "manage_threads", False))
        if interaction.user.id != thread.owner_id and not moderator:
            await interaction.response.send_message(ONLY_AUTHOR, ephemeral=True, allowed_mentions=NO_MENTIONS)
            return
        # Say so first: nothing can be posted in the post once it is archived.
        await interaction.response.send_message(SOLVED, allowed_mentions=NO_MENTIONS)
        if not await self.tag(thread, SOLVED_TAGS, drop=ANSWERED_TAGS + NEEDS_PERSON_TAGS, archive=True):
            try:
                await interaction.followup.send(CANNOT_CLOSE, ephemeral=True, allowed_mentions=NO_MENTIONS)
            except discord.HTTPException:
                log.info("discord: could not tell a Solved clicker the post stays open", exc_info=True)
