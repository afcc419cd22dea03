"""Citations of synced pages link to the page on every platform; files from the docs folder stay titles; a title
or address crafted to break out of the link syntax cannot."""

from __future__ import annotations

from bots.discord.surface import render_discord
from bots.slack.surface import feedback_blocks
from bots.surface import AgentTag, ReplyView
from core.events import SourceRef

PAGE = SourceRef(title="Reset your password", source="https://help.example.com/articles/reset", heading="", score=0.8)
FILE = SourceRef(title="API timeouts", source="technical/api-timeouts.md", heading="", score=0.7)


def _final(*sources: SourceRef) -> ReplyView:
    return ReplyView(body="Here is how.", agent=AgentTag("technical", "Technical"), status="done", sources=sources)


def _slack_context(view: ReplyView) -> str:
    blocks = feedback_blocks(view, "slack:T:C:1.0")
    return " ".join(e["text"] for b in blocks if b["type"] == "context" for e in b["elements"])


def test_slack_links_a_synced_page_and_leaves_a_file_as_its_title() -> None:
    context = _slack_context(_final(PAGE, FILE))
    assert "<https://help.example.com/articles/reset|Reset your password>" in context
    assert "API timeouts" in context and "api-timeouts.md" not in context


def test_discord_links_a_synced_page_without_a_preview_card() -> None:
    text = render_discord(_final(PAGE, FILE))
    assert "[Reset your password](<https://help.example.com/articles/reset>)" in text
    assert "API timeouts" in text and "](<technical" not in text


def test_a_crafted_title_or_address_cannot_break_out_of_the_link() -> None:
    sneaky = SourceRef(title="Docs|<https://evil.example|click>", source="https://help.example.com/a|b", heading="",
                       score=0.8)
    slack = _slack_context(_final(sneaky))
    assert "<https://evil.example" not in slack and "|click>" not in slack
    bracketed = SourceRef(title="Docs](https://evil.example)", source="https://help.example.com/x", heading="",
                          score=0.8)
    discord = render_discord(_final(bracketed))
    assert "](https://evil.example)" not in discord
    assert "(<https://help.example.com/x>)" in discord
