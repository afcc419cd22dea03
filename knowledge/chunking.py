"""Splitting a document into chunks by heading, with a size target and overlap for long sections.

Each chunk keeps the heading path it sits under ("Upgrading > Proration"), so a passage shown to a user (or a
model) says where it came from. Code fences are never cut when a section can be split elsewhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from knowledge.loaders import Document

TARGET_CHARS = 1000
MAX_CHARS = 1400
OVERLAP_CHARS = 150
_HEADING = re.compile(r"^(#{1,3})\s+(.+?)\s*#*\s*$")


@dataclass(frozen=True, slots=True)
class Chunk:
    id: str
    text: str  # clean text, for display
    embed_text: str  # title and heading prepended: it retrieves better
    source: str
    title: str
    heading: str
    agent: str
    index: int
    content_hash: str
    cache: bool = False  # the whole document is kept in the agent's prompt (CAG)


def _sections(text: str) -> list[tuple[str, str]]:
    """(heading path, body) pairs in order; fenced code is never read as a heading."""
    sections: list[tuple[str, str]] = []
    path: list[tuple[int, str]] = []
    body: list[str] = []
    in_fence = False

    def flush() -> None:
        content = "\n".join(body).strip()
        if content:
            sections.append((" > ".join(h for _, h in path), content))
        body.clear()

    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        match = None if in_fence else _HEADING.match(line)
        if match:
            flush()
            level = len(match.group(1))
            path = [(lvl, h) for lvl, h in path if lvl < level] + [(level, match.group(2).strip())]
        else:
            body.append(line)
    flush()
    return sections


def _blocks(body: str) -> list[str]:
    """Paragraphs, with each fenced code block kept as one block."""
    blocks: list[str] = []
    current: list[str] = []
    in_fence = False
    for line in body.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        if not line.strip() and not in_fence:
            if current:
                blocks.append("\n".join(current))
                current = []
            continue
        current.append(line)
    if current:
        blocks.append("\n".join(current))
    return blocks


def _split_fence(block: str) -> list[str]:
    """A code block too long for one chunk: cut between lines, each piece closed and reopened as a fence, so
    every chunk still renders as code (the only case where a fence is cut: it cannot be avoided)."""
    lines = block.splitlines()
    opener, body = lines[0], lines[1:]
    if body and body[-1].strip().startswith("```"):
        body = body[:-1]
    budget = MAX_CHARS - len(opener) - 8
    pieces, current, size = [], [], 0
    for line in body:
        while len(line) > budget:  # one absurdly long line: hard cut
            if current:
                pieces.append(current)
                current, size = [], 0
            pieces.append([line[:budget]])
            line = line[budget:]
        if current and size + len(line) + 1 > budget:
            pieces.append(current)
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        pieces.append(current)
    return ["\n".join([opener, *piece, "```"]) for piece in pieces]


def _split_long(block: str) -> list[str]:
    """A single block over the size limit: a code fence is cut between lines (and re-fenced), prose at
    sentence ends (or hard, for a sentence longer than a chunk)."""
    if len(block) <= MAX_CHARS:
        return [block]
    if block.lstrip().startswith("```"):
        return _split_fence(block)
    sentences = re.split(r"(?<=[.!?])\s+", block)
    pieces, current = [], ""
    for sentence in sentences:
        while len(sentence) > MAX_CHARS:
            pieces.append(sentence[:MAX_CHARS])
            sentence = sentence[MAX_CHARS:]
        if current and len(current) + len(sentence) + 1 > MAX_CHARS:
            pieces.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}".strip()
    if current:
        pieces.append(current)
    return pieces


def _pack(body: str) -> list[str]:
    """Blocks packed into ~TARGET_CHARS windows; each new window starts with the tail of the previous one."""
    windows: list[str] = []
    current = ""
    for block in (piece for b in _blocks(body) for piece in _split_long(b)):
        if current and len(current) + len(block) + 2 > TARGET_CHARS:
            windows.append(current)
            tail = current[-OVERLAP_CHARS:]
            overlap = tail[tail.find(" ") + 1 :] if " " in tail and "```" not in tail else ""
            current = f"{overlap}\n\n{block}".strip() if overlap else block
        else:
            current = f"{current}\n\n{block}".strip()
    if current:
        windows.append(current)
    return windows


def chunk_document(document: Document) -> list[Chunk]:
    """A document's chunks in reading order. `text` is clean (for display); `embed_text` starts with the title
    and heading path, which makes short sections retrievable by what they are about."""
    chunks: list[Chunk] = []
    for heading, body in _sections(document.text):
        heading_line = document.title
        if heading and heading != document.title:
            heading_line = f"{document.title} — {heading}"
        for window in _pack(body):
            index = len(chunks)
            chunks.append(
                Chunk(
                    id=f"{document.source}#{index}",
                    text=window,
                    embed_text=f"{heading_line}\n{window}",
                    source=document.source,
                    title=document.title,
                    heading=heading,
                    agent=document.agent,
                    index=index,
                    content_hash=document.content_hash,
                    cache=document.cache,
                )
            )
    return chunks
