"""👍/👎 under Discord answers, recorded through the same store as Slack's (`bots.feedback.feedback_store`).

The buttons are `discord.ui.DynamicItem`s: everything a click needs (the vote and the conversation's session key)
is in the button's `custom_id` (`sb:fb:up:discord:thread:123…`), and the client registers the class once
(`install`). So no view object is kept per message, nothing is stored, and the buttons under answers posted
before a restart keep working after it: discord.py matches any clicked `custom_id` against the template.

A click records the vote in the configured store (`feedback.jsonl`, or Postgres with DATABASE_URL), as Slack
does, and answers with an ephemeral thank-you that only the clicker sees and that pings nobody. `switchboard feedback` counts the votes under the
front-end "discord".

Discord allows 100 characters in a `custom_id`. Every Discord session key fits (the longest, an `/ask` key, is
about 70); a longer one is cut and suffixed with a digest (`shorten_key`), so its votes stay distinguishable.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any, Literal

import discord

from bots.feedback import FeedbackStore, FileFeedbackStore, Vote

log = logging.getLogger(__name__)

FRONTEND = "discord"
PREFIX = "sb:fb:"
TEMPLATE = re.compile(r"sb:fb:(?P<vote>up|down):(?P<key>.+)", re.S)
MAX_CUSTOM_ID = 100  # Discord's limit for a component's custom_id
DIGEST_CHARS = 12
LABELS: dict[Vote, tuple[str, str]] = {"up": ("👍", "Helpful"), "down": ("👎", "Not helpful")}
THANKS: dict[Vote, str] = {"up": "Thanks for the feedback!",
                           "down": "Thanks for telling us. A teammate can follow up in this thread."}
NOT_SAVED = "Sorry, your vote could not be saved. Please try again in a minute."
STORE_ATTRIBUTE = "feedback_store"  # set on the client by `install`: where a click's vote is written


def custom_id(vote: Vote, session_key: str) -> str:
    """The button's custom_id: the vote and the session key, never over Discord's 100 characters."""
    return f"{PREFIX}{vote}:{shorten_key(session_key, MAX_CUSTOM_ID - len(PREFIX) - len('down:'))}"


def shorten_key(session_key: str, limit: int) -> str:
    """`session_key` when it fits in `limit` characters, else its start, "~" and a digest of the whole key."""
    if len(session_key) <= limit:
        return session_key
    digest = hashlib.sha256(session_key.encode()).hexdigest()[:DIGEST_CHARS]
    return f"{session_key[: limit - DIGEST_CHARS - 1]}~{digest}"


class FeedbackButton(discord.ui.DynamicItem[discord.ui.Button], template=TEMPLATE):  # type: ignore[call-arg]
    """One of the two buttons; rebuilt by discord.py from the clicked `custom_id`, so it survives restarts."""

    def __init__(self, vote: Vote, session_key: str) -> None:
        emoji, label = LABELS[vote]
        super().__init__(discord.ui.Button(style=discord.ButtonStyle.secondary, emoji=emoji, label=label,
                                           custom_id=custom_id(vote, session_key)))
        self.vote: Vote = vote
        self.session_key = session_key

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> FeedbackButton:
        vote: Literal["up", "down"] = "up" if match["vote"] == "up" else "down"
        return cls(vote, match["key"])

    async def callback(self, interaction: discord.Interaction) -> None:
        store: FeedbackStore | None = getattr(interaction.client, STORE_ATTRIBUTE, None)
        text = THANKS[self.vote]
        try:
            if store is None:
                raise RuntimeError("the client has no feedback store (bots.discord.feedback.install)")
            await store.record(frontend=FRONTEND, session_key=self.session_key, vote=self.vote,
                               user=str(interaction.user.id),
                               message=str(interaction.message.id) if interaction.message else None)
        except Exception as exc:  # noqa: BLE001 - the clicker reads NOT_SAVED; the log says why (no secrets)
            log.warning("discord: recording a %s vote on %s failed: %s", self.vote, self.session_key, exc)
            text = NOT_SAVED
        try:
            await interaction.response.send_message(text, ephemeral=True,
                                                    allowed_mentions=discord.AllowedMentions.none())
        except discord.HTTPException:  # the click expired (3 s) or was already answered: the vote still counts
            log.warning("discord: could not answer a feedback click on %s", self.session_key, exc_info=True)


def feedback_view(session_key: str) -> discord.ui.View:
    """The 👍/👎 row for the final message of an answer in conversation `session_key`.

    `timeout=None` matters: discord.py stores the view when the message is edited with it, and a view that
    times out unregisters its dynamic items from the client, which would silence every button until a restart.
    """
    # The same row carries "Talk to a person" (bots.support); imported here because bots.discord.handoff imports
    # the surface, which imports this module.
    from bots.discord.handoff import AskForPersonButton

    view = discord.ui.View(timeout=None)
    view.add_item(FeedbackButton("up", session_key))
    view.add_item(FeedbackButton("down", session_key))
    view.add_item(AskForPersonButton(session_key))
    return view


def install(client: discord.Client, store: FeedbackStore | Path) -> None:
    """Make `client` answer clicks on feedback buttons, including those under messages sent before a restart.
    `store` is where votes go (`bots.feedback.feedback_store(settings)`); a folder means its feedback.jsonl."""
    setattr(client, STORE_ATTRIBUTE, FileFeedbackStore(store) if isinstance(store, (str, Path)) else store)
    client.add_dynamic_items(FeedbackButton)
