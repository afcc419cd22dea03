"""Markdown → Slack mrkdwn: each rule of `bots.slack.mrkdwn`, and that nothing converted can ping anyone."""

from __future__ import annotations

import pytest

from bots.slack.mrkdwn import ZWJ, to_mrkdwn
from bots.slack.native import defuse_markdown
from bots.slack.surface import feedback_blocks, render_slack
from bots.streaming import AgentTag, ReplyView
from core.events import SourceRef


@pytest.mark.parametrize(("markdown", "expected"), [
    ("**Pro** plan", "*Pro* plan"),
    ("__Pro__ plan", "*Pro* plan"),
    ("an *important* note", "an _important_ note"),
    ("an _important_ note", "an _important_ note"),
    ("snake_case_name and 2*3*4", "snake_case_name and 2*3*4"),
    ("~~old~~ new", "~old~ new"),
    ("## Refunds", "*Refunds*"),
    ("# **Bold** heading", "*Bold heading*"),
    ("- one\n  * two\n+ three", "• one\n  • two\n• three"),
    ("1. first\n2. second", "1. first\n2. second"),
    ("> quoted **text**", "> quoted *text*"),
    ("[the docs](https://docs.lumenly.io/a?b=1&c=2)", "<https://docs.lumenly.io/a?b=1&amp;c=2|the docs>"),
    ("![diagram](https://x.io/d.png)", "<https://x.io/d.png|diagram>"),
    ("[click](javascript:alert(1))", "[click](javascript:alert(1))"),
    ("Tom & Jerry <b>", "Tom &amp; Jerry &lt;b&gt;"),
    ("use `a < b && **c**`", "use `a &lt; b &amp;&amp; **c**`"),
    ("---", "──────────"),
])
def test_inline_and_line_rules(markdown: str, expected: str) -> None:
    assert to_mrkdwn(markdown) == expected


def test_code_fences_stay_intact_with_only_escapes_and_no_language_tag() -> None:
    markdown = "Try:\n```python\nif a < b and **not_bold**:\n    print('_x_')\n```\nDone **now**."
    assert to_mrkdwn(markdown) == ("Try:\n```\nif a &lt; b and **not_bold**:\n    print('_x_')\n```\nDone *now*.")


def test_an_open_fence_while_streaming_stays_code_to_the_end() -> None:
    assert to_mrkdwn("Run:\n```bash\ncurl -H 'a: <b>' **x**") == "Run:\n```\ncurl -H 'a: &lt;b&gt;' **x**"


def test_tables_become_aligned_preformatted_text() -> None:
    markdown = "| Plan | Price |\n|---|---:|\n| **Basic** | $0 |\n| Enterprise | [ask](mailto:sales@lumenly.io) |"
    assert to_mrkdwn(markdown) == (
        "```\n"
        "Plan        Price\n"
        "----------  -----------------------------\n"
        "Basic       $0\n"
        "Enterprise  ask (mailto:sales@lumenly.io)\n"
        "```")


@pytest.mark.parametrize("ping", ["<!here>", "<!channel>", "<!everyone>", "<@U0123ABC>", "<!subteam^S123|@team>",
                                  "<!here|here>"])
def test_special_mentions_the_model_writes_are_shown_as_text(ping: str) -> None:
    converted = to_mrkdwn(f"Hey {ping} look")
    assert "<!" not in converted and "<@" not in converted and "&lt;" in converted


@pytest.mark.parametrize("word", ["@here", "@channel", "@everyone", "@Everyone"])
def test_bare_broadcast_words_are_defused(word: str) -> None:
    converted = to_mrkdwn(f"ping {word} now, also in **{word}** and [x {word}](https://x.io)")
    assert word not in converted and f"@{ZWJ}{word[1:]}" in converted


def test_native_markdown_is_defused_too() -> None:
    assert defuse_markdown("hi <!channel> <@U1> @here") == f"hi <{ZWJ}!channel> <{ZWJ}@U1> @{ZWJ}here"


def test_odd_unicode_survives_and_is_normalised() -> None:
    assert to_mrkdwn("Cafe\u0301 — 東京 🚀 **ok**") == "Café — 東京 🚀 *ok*"


def test_a_rendered_reply_carries_tag_marker_and_sources() -> None:
    agent = AgentTag("billing", "Billing")
    streaming = render_slack(ReplyView(body="Pro is **$49**", agent=agent, status="streaming"))
    assert streaming == "*Billing*\nPro is *$49* ▌"
    done = render_slack(ReplyView(body="Pro is **$49**", agent=agent, status="done",
                                  sources=(SourceRef("Plans & pricing", "billing/plans.md"),)))
    assert done == "*Billing*\nPro is *$49*\n\n_Sources: Plans &amp; pricing_"


def test_final_blocks_split_long_answers_into_sections_slack_accepts() -> None:
    body = "\n\n".join(f"Paragraph {i}: " + "retry with backoff " * 20 for i in range(20))
    view = ReplyView(body=body, agent=AgentTag("technical", "Technical"), status="done",
                     sources=(SourceRef("Timeouts", "technical/timeouts.md"),))
    blocks = feedback_blocks(view, "slack:T:C:1.0")
    sections = [b for b in blocks if b["type"] == "section"]
    assert len(sections) >= 3 and all(len(b["text"]["text"]) <= 3000 for b in sections)
    assert [b["type"] for b in blocks[-2:]] == ["context", "actions"]
    assert "Sources: Timeouts" in blocks[-2]["elements"][0]["text"]
