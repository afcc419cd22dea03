"""Cutting a long Markdown answer into messages that fit a platform's length limit. Pure functions.

Why a module of its own: the rules are fiddly and worth testing without any network or clock. The streaming
renderer (`bots.streaming`) calls `cut_markdown` one part at a time while an answer grows, so a part, once cut,
never moves; `split_markdown` is the whole-text convenience built on it.

Rules:
- A part is at most `limit` characters, including any fence line added to it.
- A code fence (a line opening with three or more backticks) is never left open across a cut. When the fence
  fits whole in a part of its own, the cut goes just before it; otherwise the part ends with a closing fence and
  the next part starts by reopening it with the same opening line (so the language tag is kept).
- Cuts prefer, in order: a paragraph break, a line break, a sentence end, a space; a cut that would leave a part
  less than half full tries the next kind first. Only text with no break at all is cut mid-word.
- Nothing but whitespace at a cut is dropped, so the parts with their added fence lines removed spell out the
  original text (the invariant the property test checks through `Cut.consumed`).
- A cut inside a line never turns a piece of that line into a fence line: "``` a ```" (not a fence: its info
  string has backticks) is not cut into a part "```" that would open a code block, nor "x ```" in a code block
  into a rest starting with "```" that would close it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

_OPENER = re.compile(r"^( {0,3})(`{3,})([^`\n]*)$")
_CLOSER = re.compile(r"^ {0,3}(`{3,})[ \t]*$")
# (separator, characters of it kept at the end of the part): a sentence keeps its punctuation.
_BOUNDARIES: tuple[tuple[str, int], ...] = (
    ("\n\n", 0), ("\n", 0), (". ", 1), ("! ", 1), ("? ", 1), ("; ", 1), (", ", 1), (" ", 0),
)


@dataclass(frozen=True, slots=True)
class Fence:
    """A fenced code block: `start` of its opening line, `content_start` just after that line, `end` just
    after its closing line (None when the text ends inside it)."""

    start: int
    content_start: int
    end: int | None
    indent: str
    ticks: str
    info: str

    @property
    def opener(self) -> str:
        return f"{self.indent}{self.ticks}{self.info}"

    @property
    def closer(self) -> str:
        return f"{self.indent}{self.ticks}"

    def holds(self, position: int) -> bool:
        """True when a cut at `position` would fall inside the block (after its opening line's start)."""
        return self.start < position and (self.end is None or position < self.end)


@dataclass(frozen=True, slots=True)
class Cut:
    """The first part of a text, and how the rest continues.

    `head` is the part (fences balanced); `consumed` is how many characters of the input it covers, including
    whitespace dropped at the cut; the remaining text is `reopen + text[consumed:]` (see `rest`).
    """

    head: str
    consumed: int
    reopen: str = ""

    def rest(self, text: str) -> str:
        return self.reopen + text[self.consumed:]


def scan_fences(text: str) -> list[Fence]:
    """Every fenced code block in `text`, in order (CommonMark rules for backtick fences)."""
    fences: list[Fence] = []
    current: tuple[int, int, str, str, str] | None = None
    position = 0
    for line in text.splitlines(keepends=True):
        bare = line.rstrip("\r\n")
        line_end = position + len(line)
        if current is None:
            opened = _OPENER.match(bare)
            if opened:
                current = (position, line_end, opened.group(1), opened.group(2), opened.group(3))
        else:
            closed = _CLOSER.match(bare)
            if closed and closed.group(1).startswith(current[3]):
                start, content_start, indent, ticks, info = current
                end = position + len(bare)
                fences.append(Fence(start, content_start, end, indent, ticks, info))
                current = None
        position = line_end
    if current is not None:
        start, content_start, indent, ticks, info = current
        fences.append(Fence(start, content_start, None, indent, ticks, info))
    return fences


def open_fence(text: str) -> str | None:
    """The opening line of a fence `text` leaves open (e.g. "```python"), or None when all are closed."""
    fences = scan_fences(text)
    if fences and fences[-1].end is None:
        return fences[-1].opener
    return None


def close_open_fence(text: str) -> str:
    """`text` with a closing fence appended if it ends inside a code block (for showing a part mid-stream)."""
    fences = scan_fences(text)
    if not fences or fences[-1].end is not None:
        return text
    return text.rstrip("\n") + "\n" + fences[-1].closer


def _boundary(text: str, lo: int, hi: int, allowed: Callable[[int, int], bool] = lambda _end, _resume: True,
              separators: tuple[tuple[str, int], ...] = _BOUNDARIES) -> tuple[int, int] | None:
    """The best cut in text[lo:hi] that is `allowed(end, resume)`: (end of the part, start of the rest), or
    None."""
    for floor in (max(lo, hi // 2), lo):
        for separator, kept in separators:
            # The dropped part of a separator may lie just past the limit; the kept part may not.
            found = text.rfind(separator, floor, hi + len(separator) - kept)
            while found >= floor:
                if allowed(found + kept, found + len(separator)):
                    return found + kept, found + len(separator)
                found = text.rfind(separator, floor, found + len(separator) - 1)
    return None


def _keeps_lines(text: str, end: int, resume: int, fence_line: re.Pattern[str]) -> bool:
    """False when cutting a line at `end`/`resume` makes its head or its rest a `fence_line` the whole line is
    not (an opener in prose, a closer inside a block): the cut would open or close a code block of its own."""
    line_start = text.rfind("\n", 0, end) + 1
    line_end = text.find("\n", end)
    line_end = len(text) if line_end < 0 else line_end
    whole = text[line_start:line_end].rstrip()
    if fence_line.match(whole):
        return True  # a real fence line: the fence scan has placed the cut around it already
    head = text[line_start:end].rstrip()
    if head and fence_line.match(head):
        return False
    if resume < len(text) and resume > 0 and text[resume - 1] != "\n":  # the rest starts mid-line
        rest_end = text.find("\n", resume)
        if fence_line.match(text[resume: len(text) if rest_end < 0 else rest_end]):
            return False
    return True


def _hard_cut(text: str, limit: int, lo: int, fence_line: re.Pattern[str]) -> int:
    """Where to cut text with no allowed break before `limit`: at `limit`, or a little earlier when that would
    make a fence line (within the line's backticks, leaving "``" and "`…", which are no fence)."""
    end = limit
    while end > lo and not _keeps_lines(text, end, end, fence_line):
        end -= 1
    return end if end > lo else limit


def _fence_at(fences: list[Fence], position: int) -> Fence | None:
    for fence in fences:
        if fence.holds(position):
            return fence
    return None


def cut_markdown(text: str, limit: int) -> Cut:
    """Cut the first part (at most `limit` characters) off `text`; the whole text when it already fits.

    Raises ValueError when the text starts with a code block and `limit` leaves no room for a line of it
    between its opening line and a closing fence.
    """
    if len(text) <= limit:
        return Cut(text, len(text))
    fences = scan_fences(text)
    # The block the limit falls in, if any (an unclosed one runs to the end of the text, which is past it).
    straddling = next((f for f in fences if f.start < limit and (f.end is None or f.end > limit)), None)
    if straddling is not None:
        if text[: straddling.start].strip():
            # Whether it fits in one message or not, the block starts the next part: cut just before it. A block
            # still streaming is cut the same way whatever it grows into, so a part sealed now never changes.
            return _plain(text, straddling.start, straddling.start)
        return _split_block(text, limit, straddling)
    # The limit falls outside every block: cut in the prose, never inside a block that ends within this part.
    found = _boundary(text, 1, limit, lambda end, resume: _fence_at(fences, end) is None
                      and _keeps_lines(text, end, resume, _OPENER))
    if found is None:
        hard = _hard_cut(text, limit, 0, _OPENER)
        found = (hard, hard)
    end, resume = found
    return _plain(text, end, resume)


def _split_block(text: str, limit: int, fence: Fence) -> Cut:
    """Cut a code block that starts `text` and does not fit: at a line end (a blank line in the second half of
    the part preferred), mid-line only in a line too long for any part; the part is closed with a fence line and
    the rest reopens the block with its opening line."""
    room = limit - len(fence.closer) - 1  # the part's own text, before "\n" + closing fence
    lo = fence.content_start + 1  # a part carries at least some of the block's content
    if room < lo:
        raise ValueError(f"limit {limit} is too small to split a code block opened by {fence.opener!r}")
    found = _line_end(text, lo, room)
    if found is not None and fence.end is not None:
        closing_line = text.rfind("\n", 0, fence.end) + 1
        if not text[found[1]: closing_line].strip():  # only the closing line would be left: cut a line earlier
            found = _line_end(text, lo, found[0] - 1) or found
    if found is None:  # one line longer than any part can hold
        found = _boundary(text, lo, room, lambda end, resume: _keeps_lines(text, end, resume, _CLOSER))
        if found is None:
            hard = _hard_cut(text, room, lo, _CLOSER)
            found = (hard, hard)
    end, resume = found
    head = text[:end].rstrip("\n")
    return Cut(f"{head}\n{fence.closer}", resume, fence.opener + "\n")


def _line_end(text: str, lo: int, hi: int) -> tuple[int, int] | None:
    """The last line end in text[lo:hi+1] (a blank line, dropped, if there is one in the second half)."""
    blank = text.rfind("\n\n", max(lo, hi // 2), hi + 2)
    if blank >= lo:
        return blank, blank + 2
    line = text.rfind("\n", lo, hi + 1)
    return (line, line + 1) if line >= lo else None


def _plain(text: str, end: int, resume: int) -> Cut:
    """A cut outside any code block: trailing and leading blank space at the cut are dropped."""
    head = text[:end].rstrip()
    while resume < len(text) and text[resume] in "\n\r":
        resume += 1
    if not head:  # never emit an empty part; the caller guarantees progress
        head, resume = text[:end], end
    return Cut(head, resume)


def split_markdown(text: str, limit: int) -> list[str]:
    """All parts of `text`, each at most `limit` characters, with fences closed and reopened across parts."""
    parts: list[str] = []
    rest = text
    while True:
        cut = cut_markdown(rest, limit)
        parts.append(cut.head)
        if cut.consumed >= len(rest):
            break
        next_rest = cut.rest(rest)
        if not next_rest.strip():
            break
        rest = next_rest
    return parts
