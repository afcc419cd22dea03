"""Issue 15, item 9: hypothesis property tests for the three pure renderers of an answer.

- Slack mrkdwn (`to_mrkdwn`): whatever the model writes, nothing pings (no `<!here>`, `<@U…>`, bare `@channel`),
  every `<…>` left is a link to http(s)/mailto, and with a link policy no link leaves the allow-list.
- Message splitting (`split_markdown`): parts fit, code fences never stay open across a cut, and the parts
  spell out the text again (reusing `tests/test_splitting.py`'s exact reconstruction check).
- The chat page's Markdown renderer (`renderMarkdown` of bots/web/static/index.html, run by Node): no element
  but the renderer's own, no attribute but an `href` to http(s)/mailto (on the allow-list when there is one),
  and no `javascript:` link. Skipped, naming the package, without Node.

Bounded: a few dozen examples each, no database, so the file runs in a few seconds.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bots import links
from bots.links import LinkPolicy
from bots.slack.mrkdwn import to_mrkdwn
from bots.splitting import open_fence, split_markdown
from tests.test_links import run_page_renderer
from tests.test_splitting import assert_reconstructs

FAST = settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))

# Pieces a model (or a planted document) writes: Markdown syntax, links good and bad, pings, HTML, code.
PIECES = st.sampled_from([
    "**", "*", "_", "__", "~~", "`", "```", "```python\n", "\n", "\n\n", "# ", "- ", "1. ", "> ", "| a | b |\n",
    "|---|---|\n", "[", "]", "(", ")", "<", ">", "&", "|", "!", "@here", "@channel", "@everyone", "<!here>",
    "<!channel>", "<@U123>", "<!subteam^S1>", "<#C1>", "https://docs.lumenly.io/a?b=1&c=2", "https://evil.example/x",
    "mailto:help@lumenly.io", "mailto:x@evil.example", "javascript:alert(1)", "[portal](https://evil.example/login)",
    "[docs](https://docs.lumenly.io/p)", "![img](https://evil.example/i.png)", "<script>x</script>",
    "<img src=x onerror=alert(1)>", "\" onmouseover=\"x", "'", "word", "two words", "Straße", "🙂", "\u200b",
    "\ue001", "\ue003",
])
MARKDOWN = st.one_of(st.lists(PIECES, max_size=40).map("".join), st.text(max_size=200))
LINK = re.compile(r"<((?:https?://|mailto:)[^|>\s]+)\|[^>]*>")
POLICY = LinkPolicy.of(["lumenly.io"])


@FAST
@given(MARKDOWN)
@example("|---|---|\n|---|---|")  # a table of only rule rows: to_mrkdwn raised ValueError before
@example("```python\n```@here")  # a fence inside an unclosed block closed Slack's block: @here became prose
def test_mrkdwn_never_pings_and_only_links_to_web_addresses(markdown: str) -> None:
    out = to_mrkdwn(markdown)  # never raises: a table of only rule rows once did (ValueError)
    assert not re.search(r"<[!@#]", out), out
    prose = re.sub(r"```.*?(```|$)|`[^`]*`", "", out, flags=re.DOTALL)  # in code nothing is a mention
    assert not re.search(r"@(here|channel|everyone)\b", prose, re.IGNORECASE), out
    rest = re.sub(r"^>", "", LINK.sub("", out), flags=re.MULTILINE)  # a line's leading `>` is a quote
    assert "<" not in rest and ">" not in rest, out
    assert to_mrkdwn(markdown) == out  # deterministic


@FAST
@given(MARKDOWN)
def test_mrkdwn_links_stay_on_the_allow_list(markdown: str) -> None:
    previous = links.configure(POLICY)
    try:
        out = to_mrkdwn(markdown)
    finally:
        links.configure(previous)
    for url in LINK.findall(out):
        assert POLICY.allows(url.replace("&amp;", "&")), (url, out)


# Fences on lines of their own, and backticks mid-line (a line "``` a ```" is no fence: never cut into one).
PROSE = st.lists(st.sampled_from(["alpha", "beta.", "gamma,", "delta!", "`code`", "**bold**", "x" * 40, "\n",
                                  "\n\n", "- item", "\n```\n", "\n```python\n", "\n    indented",
                                  "word " * 12, "```", "x```y"]),
                 min_size=1, max_size=80).map(lambda words: " ".join(words))


@FAST
@given(PROSE, st.integers(min_value=40, max_value=400))
def test_split_parts_fit_stay_balanced_and_spell_out_the_text(text: str, limit: int) -> None:
    try:
        parts = assert_reconstructs(text, limit)
    except ValueError:  # a fence opening line longer than a part can hold: refused by design
        return
    assert parts == split_markdown(text, limit)
    assert all(len(part) <= limit for part in parts)
    for part in parts[:-1]:
        assert open_fence(part) is None, part


ALLOWED_TAGS = {"p", "h4", "ul", "ol", "li", "pre", "code", "strong", "em", "a"}


@settings(max_examples=3, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.lists(MARKDOWN, min_size=20, max_size=40))
def test_the_chat_page_renderer_makes_only_its_own_elements_and_safe_links(texts: list[str]) -> None:
    for domains, rendered in ((None, run_page_renderer(texts, None)),
                              (["lumenly.io"], run_page_renderer(texts, ["lumenly.io"]))):
        for text, html in zip(texts, rendered):
            tags = {m.lower() for m in re.findall(r"</?([A-Za-z][A-Za-z0-9]*)", html)}
            assert tags <= ALLOWED_TAGS, (text, html)
            attributes = re.findall(r"<[a-z0-9]+(\s[^>]*)?>", html)
            for attribute in filter(None, attributes):
                assert re.fullmatch(r' href="[^"]*" target="_blank" rel="noopener noreferrer"', attribute), html
            for href in re.findall(r'href="([^"]*)"', html):
                assert href.startswith(("http://", "https://", "mailto:")), html
                if domains:
                    assert POLICY.allows(href.replace("&amp;", "&")), (text, html)


@pytest.mark.parametrize("text,limit", [
    ("``` " + "x" * 40 + " ```", 40),  # found by the property above: the part "```" opened a block of its own
    ("```" + "x" * 60 + "`", 40),  # no break at all: the hard cut at the limit would leave "```xxx…" open
    ("Run it:\n```\n" + "y" * 30 + " ```\nmore\n```", 40),  # in a block: a rest "```" would close it early
])
def test_a_cut_never_makes_a_fence_line_of_a_piece_of_a_line(text: str, limit: int) -> None:
    parts = assert_reconstructs(text, limit)
    assert all(len(part) <= limit for part in parts), parts
    assert all(open_fence(part) is None for part in parts), parts  # the last included: the text has none open
    assert all(part.strip() not in ("```", "") for part in parts), parts
