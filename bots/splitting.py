"""Splitting a long Markdown answer into messages that fit a platform's length limit.

Pure functions. A split never leaves a code fence open: when a cut must fall inside a fence, the part is closed
with ``` and the next part reopens it with the same language tag. Cuts prefer a paragraph break, then a line
break, then a sentence end, then a space.
"""

from __future__ import annotations

import re

FENCE = re.compile(r"^\s*```(\S*)", re.MULTILINE)


def open_fence(text: str) -> str | None:
    """The language tag of a fence left open at the end of `text` ('' for a bare fence), or None."""
    tag: str | None = None
    for match in FENCE.finditer(text):
        tag = match.group(1) if tag is None else None
    return tag


def _cut_point(text: str, limit: int) -> int:
    window = text[:limit]
    for separator in ("\n\n", "\n", ". ", "! ", "? ", " "):
        position = window.rfind(separator)
        if position > limit // 3:
            return position + len(separator)
    return limit


def split_markdown(text: str, limit: int) -> list[str]:
    """Parts of at most `limit` characters; fences are closed and reopened across parts."""
    if limit < 20:
        raise ValueError("limit too small to split Markdown safely")
    parts: list[str] = []
    rest = text
    while len(rest) > limit:
        # Leave room to close a fence ("\n```") if the cut lands inside one.
        cut = _cut_point(rest, limit - 4)
        head, rest = rest[:cut], rest[cut:]
        tag = open_fence(head)
        if tag is not None:
            head = head.rstrip("\n") + "\n```"
            rest = f"```{tag}\n" + rest.lstrip("\n")
        parts.append(head.rstrip())
        rest = rest.lstrip(" ") if tag is None else rest
    parts.append(rest)
    return [p for p in parts if p.strip()] or [""]
