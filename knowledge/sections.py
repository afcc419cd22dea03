"""From a retrieved chunk to the section it belongs to, when that section fits the budget.

Small chunks retrieve precisely, but a reader (or a model) wants the paragraph around the match: the steps
before "### Okta", or the second half of a section that was cut into two windows. A chunk's *section* here is
its second-level heading with everything under it ("SSO > Setting up SAML" with its Okta and Entra ID
subsections), or, when that is too long, the chunk's own heading with all its windows. Never the whole
document: a first-level heading is the document's title, and whole documents are what cached agents are for.

Pure functions over one document's chunks in reading order, as (heading path, text) pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

from knowledge.chunking import OVERLAP_CHARS
from knowledge.types import Section

SECTION_CHARS = 1_500  # a section longer than this is not shown whole: the chunk is


def join_windows(texts: Sequence[str]) -> str:
    """The windows of one section joined back into its text: each window after the first starts with up to
    OVERLAP_CHARS of the previous one (`chunking._pack`), followed by a blank line; that repeat is dropped."""
    if not texts:
        return ""
    joined = texts[0]
    for text in texts[1:]:
        cut = 0
        for size in range(min(OVERLAP_CHARS, len(text), len(joined)), 0, -1):
            if text.startswith("\n\n", size) and joined.endswith(text[:size]):
                cut = size + 2
                break
        joined = f"{joined}\n\n{text[cut:]}"
    return joined


def _render(chunks: Sequence[tuple[str, str]], top: str) -> str:
    """Chunks under one heading, windows joined, each subsection introduced by its own heading in bold."""
    parts: list[str] = []
    run: list[str] = []
    current = top

    def flush() -> None:
        if run:
            parts.append(join_windows(run))
            run.clear()

    for heading, text in chunks:
        if heading != current:
            flush()
            parts.append(f"**{heading.rsplit(' > ', 1)[-1]}**")
            current = heading
        run.append(text)
    flush()
    return "\n\n".join(parts)


def _span(chunks: Sequence[tuple[str, str]], position: int, under: str) -> tuple[int, int]:
    """The contiguous run of chunks around `position` whose heading is `under` or below it."""

    def inside(heading: str) -> bool:
        return heading == under or heading.startswith(f"{under} > ")

    start = position
    while start > 0 and inside(chunks[start - 1][0]):
        start -= 1
    end = position + 1
    while end < len(chunks) and inside(chunks[end][0]):
        end += 1
    return start, end


def section_of(chunks: Sequence[tuple[str, str]], position: int, budget: int = SECTION_CHARS) -> Section | None:
    """The section to show for the chunk at `position` (one document's chunks, in order), or None when the
    chunk alone is its section or nothing larger fits `budget`."""
    heading = chunks[position][0]
    levels = heading.split(" > ")
    candidates: list[tuple[str, tuple[int, int]]] = []
    if len(levels) >= 2:  # the second-level section with its subsections
        parent = " > ".join(levels[:2])
        candidates.append((parent, _span(chunks, position, parent)))
    candidates.append((heading, _own(chunks, position)))  # else the chunk's own windows
    for top, (start, end) in candidates:
        if end - start < 2:
            continue
        text = _render(chunks[start:end], top)
        if len(text) <= budget:
            return Section(top, text)
    return None


def _own(chunks: Sequence[tuple[str, str]], position: int) -> tuple[int, int]:
    """The windows of the chunk's own heading (not its subsections)."""
    heading = chunks[position][0]
    start, end = position, position + 1
    while start > 0 and chunks[start - 1][0] == heading:
        start -= 1
    while end < len(chunks) and chunks[end][0] == heading:
        end += 1
    return start, end
