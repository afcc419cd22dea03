"""Markdown from the model → Slack mrkdwn, deterministically, with nothing in it able to ping anyone.

Why hand-written: Slack's mrkdwn is not Markdown (single `*` is bold, `_` italic, `<url|text>` links, no headings
or tables) and the libraries that exist target the opposite direction or add HTML. The rules, in order:

- Code (fenced blocks and `inline spans`) is kept as code: only `&`, `<`, `>` are escaped inside it, and a
  fence's language tag is dropped (Slack would print it as the first line). A ``` inside a block's text gets a
  word joiner, or Slack would close the block there. An unclosed fence - an answer still
  streaming - runs to the end of the text.
- `&`, `<`, `>` are escaped everywhere else too, which is also what neutralises `<!here>`, `<!channel>`,
  `<!everyone>`, `<@U123>` and `<!subteam^…>` written by the model: Slack shows them as text. Bare `@here`,
  `@channel` and `@everyone` get a zero-width joiner after the `@`, so no client or future `link_names` setting
  turns them into a ping.
- Headings become bold lines; `-`/`*`/`+` bullets become `•`; numbered lists stay; `> quotes` stay quotes.
- `**bold**`/`__bold__` → `*bold*`, `*italic*`/`_italic_` → `_italic_`, `~~strike~~` → `~strike~`,
  `[text](https://…)` and images → `<https://…|text>` (http, https and mailto only; anything else stays text),
  when the link's domain is on the allow-list (`bots.links`); otherwise, and for a bare URL off the list, the
  label and the full URL in code.
- A table (consecutive `|` rows) becomes an aligned preformatted block, since Slack cannot draw one.
"""

from __future__ import annotations

import re
import unicodedata

from bots import links
from bots.splitting import scan_fences

ZWJ = "\u2060"  # word joiner: invisible, and breaks Slack's @here/@channel/@everyone keywords

_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
_LINK = re.compile(r"!?\[([^\]\n]*)\]\(\s*<?((?:https?://|mailto:)[^\s)>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC_STAR = re.compile(r"(?<![*\w])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![*\w])")
_ITALIC_UNDERSCORE = re.compile(r"(?<![_\w])_(?=[^\s_])(.+?)(?<=[^\s_])_(?![_\w])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$")
_BULLET = re.compile(r"^(\s*)[-*+][ \t]+(.*)$")
_QUOTE = re.compile(r"^ {0,3}>[ \t]?(.*)$")
_RULE = re.compile(r"^ {0,3}([-*_])([ \t]*\1){2,}[ \t]*$")
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_BROADCAST = re.compile(r"@(here|channel|everyone)\b", re.IGNORECASE)
# Placeholders for spans already converted; private-use characters a model does not write.
_BOLD_MARK = "\ue000"
_SLOT = "\ue001{}\ue002"
_SLOT_RE = re.compile("\ue001(\\d+)\ue002")


def escape(text: str) -> str:
    """Slack's three control characters, escaped as its API requires."""
    return "".join(_ESCAPES.get(ch, ch) for ch in text)


def defuse_broadcasts(text: str) -> str:
    """`@here`, `@channel`, `@everyone` as plain words that no Slack client turns into a ping."""
    return _BROADCAST.sub(lambda m: f"@{ZWJ}{m.group(1)}", text)


def to_mrkdwn(markdown: str) -> str:
    """Convert model Markdown to Slack mrkdwn (see the module docstring for the rules). Links off the allow-list
    (`bots.links`), masked or bare, are shown as their label and full URL in code: nothing links there."""
    text = unicodedata.normalize("NFC", markdown.replace("\r\n", "\n").replace("\r", "\n"))
    out: list[str] = []
    position = 0
    for fence in scan_fences(text):
        out.append(_prose(text[position:fence.start]))
        if fence.end is None:  # still open (streaming): the rest of the text is code
            end, body, closer = len(text), text[fence.content_start:], ""
        else:
            end, closer = fence.end, "\n```"
            body = text[fence.content_start:end].rpartition("\n")[0] if "\n" in text[fence.content_start:end] \
                else ""
        out.append("```\n" + _code_block_body(body.rstrip("\n")) + closer)
        position = end
    out.append(_prose(text[position:]))
    return "".join(out)


def _code_block_body(body: str) -> str:
    """A fenced block's text, escaped, with any ``` inside it broken by a word joiner: Slack ends a block at the
    first ``` it meets, so one inside the code would turn the rest (an `@here` included) into prose."""
    return escape(body).replace("```", f"``{ZWJ}`")


def _prose(text: str) -> str:
    if not text:
        return text
    lines = text.split("\n")
    out: list[str] = []
    index = 0
    while index < len(lines):
        if _TABLE_ROW.match(lines[index]):
            end = index
            while end < len(lines) and (_TABLE_ROW.match(lines[end]) or _TABLE_RULE.match(lines[end])):
                end += 1
            if end - index >= 2:
                out.append(_table(lines[index:end]))
                index = end
                continue
        out.append(_line(lines[index]))
        index += 1
    return "\n".join(out)


def _line(line: str) -> str:
    if heading := _HEADING.match(line):
        return f"*{_inline(heading.group(1), bold='')}*"
    if _RULE.match(line):
        return "──────────"
    if quote := _QUOTE.match(line):
        return ">" + (" " + _inline(quote.group(1)) if quote.group(1) else "")
    if bullet := _BULLET.match(line):
        return f"{bullet.group(1)}• {_inline(bullet.group(2))}"
    return _inline(line)


def _inline(text: str, bold: str = "*") -> str:
    """Inline Markdown of one line (or one table cell) → mrkdwn, code spans and links protected first."""
    slots: list[str] = []

    def keep(value: str) -> str:
        slots.append(value)
        return _SLOT.format(len(slots) - 1)

    text = _INLINE_CODE.sub(lambda m: keep(f"`{escape(m.group(2).strip())}`"), text)
    policy = links.current()
    text = _LINK.sub(lambda m: keep(f"<{escape(m.group(2))}|{_link_label(m.group(1) or m.group(2))}>"
                                    if policy.allows(m.group(2)) else _refused(m.group(1), m.group(2))), text)
    if policy.domains is not None:  # Slack links bare URLs itself: those off the list become code
        text = links.BARE_URL.sub(lambda m: m.group(0) if policy.allows(m.group(0)) else keep(_refused("", m.group(0))),
                                  text)
    text = escape(text)
    text = _BOLD.sub(lambda m: f"{_BOLD_MARK}{m.group(2)}{_BOLD_MARK}", text)
    text = _ITALIC_STAR.sub(lambda m: f"_{m.group(1)}_", text)
    text = _ITALIC_UNDERSCORE.sub(lambda m: f"_{m.group(1)}_", text)
    text = _STRIKE.sub(lambda m: f"~{m.group(1)}~", text)
    text = defuse_broadcasts(text).replace(_BOLD_MARK, bold)
    return _SLOT_RE.sub(lambda m: slots[int(m.group(1))], text)


def _refused(label: str, url: str) -> str:
    """A link off the allow-list: its label, then its full URL as code (`bots.links.plain`)."""
    return defuse_broadcasts(escape(links.plain(label, url)))


def _link_label(label: str) -> str:
    # Inside <url|label>, a `|` or `>` would end the label early.
    return defuse_broadcasts(escape(label.replace("|", "¦")))


def _table(rows: list[str]) -> str:
    cells = [[_plain_cell(c) for c in row.strip().strip("|").split("|")] for row in rows if not _TABLE_RULE.match(row)]
    if not cells:  # only rule rows (`|---|---|` twice): no table to draw (found by tests/test_properties.py)
        return "──────────"
    width = max(len(r) for r in cells)
    cells = [r + [""] * (width - len(r)) for r in cells]
    widths = [max(len(r[i]) for r in cells) for i in range(width)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in cells]
    if len(lines) > 1:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return "```\n" + "\n".join(escape(line) for line in lines) + "\n```"


def _plain_cell(cell: str) -> str:
    """A table cell as plain text (inside a preformatted block no formatting renders)."""
    cell = _LINK.sub(lambda m: f"{m.group(1)} ({m.group(2)})" if m.group(1) else m.group(2), cell.strip())
    cell = _BOLD.sub(lambda m: m.group(2), cell)
    cell = _INLINE_CODE.sub(lambda m: m.group(2), cell)
    return defuse_broadcasts(cell)
