"""The Markdown splitter: parts fit, fences stay balanced, nothing but whitespace is lost at a cut."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from bots.splitting import Cut, close_open_fence, cut_markdown, open_fence, scan_fences, split_markdown


def cuts_of(text: str, limit: int) -> list[tuple[str, Cut]]:
    """Every (input, cut) pair `split_markdown` goes through, for checking the reconstruction exactly."""
    steps: list[tuple[str, Cut]] = []
    rest = text
    while True:
        cut = cut_markdown(rest, limit)
        steps.append((rest, cut))
        if cut.consumed >= len(rest) or not cut.rest(rest).strip():
            return steps
        rest = cut.rest(rest)


def assert_reconstructs(text: str, limit: int) -> list[str]:
    """Each part, minus the fence lines the splitter added, is the next slice of the text; only whitespace is
    skipped between slices. Returns the parts."""
    position = 0
    parts = []
    for rest, cut in cuts_of(text, limit):
        parts.append(cut.head)
        reopened = len(rest) - (len(text) - position)  # a fence opening line the splitter prepended
        assert reopened >= 0 and rest[reopened:] == text[position:]
        own = cut.head[reopened:] if reopened else cut.head
        if cut.reopen:  # the splitter closed a fence: drop that closing line before comparing
            own = own[: own.rindex("\n")]
        consumed = cut.consumed - reopened
        assert consumed > 0, "every part must make progress"
        assert text[position:].startswith(own), (own, text[position:position + len(own) + 20])
        assert not text[position + len(own): position + consumed].strip(), "only whitespace may be dropped"
        position += consumed
    assert not text[position:].strip()
    return parts


def test_text_that_fits_is_one_part() -> None:
    assert split_markdown("short answer", 100) == ["short answer"]


def test_prefers_paragraph_then_line_then_sentence_then_word() -> None:
    paragraph = "First paragraph is here.\n\nSecond paragraph follows on."
    assert split_markdown(paragraph, 40)[0] == "First paragraph is here."
    lines = "line one of the text\nline two of the text\nline three"
    assert split_markdown(lines, 45)[0] == "line one of the text\nline two of the text"
    sentences = "One sentence ends here. Another begins and goes on"
    assert split_markdown(sentences, 40)[0] == "One sentence ends here."
    words = "alpha beta gamma delta epsilon zeta eta theta"
    first = split_markdown(words, 30)[0]
    assert first == "alpha beta gamma delta epsilon"


def test_a_paragraph_break_too_early_does_not_waste_the_message() -> None:
    text = "Hi.\n\n" + "word " * 40
    first = split_markdown(text, 100)[0]
    assert len(first) > 50  # the break at 3 would leave a 3-character message


def test_text_without_breaks_is_cut_hard_at_the_limit() -> None:
    parts = split_markdown("x" * 250, 100)
    assert parts == ["x" * 100, "x" * 100, "x" * 50]


def test_cut_inside_a_fence_closes_and_reopens_with_the_language_tag() -> None:
    code = "```python\n" + "\n".join(f"value_{i} = {i}" for i in range(30)) + "\n```"
    parts = split_markdown(code, 120)
    assert len(parts) > 2
    for part in parts:
        assert part.startswith("```python\n") and part.endswith("\n```") and len(part) <= 120
        assert open_fence(part) is None
    assert_reconstructs(code, 120)


def test_a_fence_that_fits_in_the_next_message_moves_there_whole() -> None:
    text = "Some introduction that takes room. " * 3 + "\n\n```bash\nmake build\nmake test\n```\n\nThat is all."
    parts = split_markdown(text, 120)
    assert parts[1].startswith("```bash\nmake build\nmake test\n```")
    assert all(part.count("```") % 2 == 0 for part in parts)


def test_only_the_closing_line_left_keeps_the_real_closing_fence() -> None:
    text = "```\n" + "a" * 40 + "\n" + "b" * 40 + "\n```\nafter the block"
    parts = split_markdown(text, 92)
    assert not any(part.startswith("```\n```") for part in parts)
    assert_reconstructs(text, 92)


def test_indentation_inside_code_survives_a_cut() -> None:
    code = "```python\ndef f():\n" + "\n".join(f"    x{i} = {i}" for i in range(20)) + "\n```"
    parts = split_markdown(code, 80)
    assert parts[1].startswith("```python\n    x")


def test_longer_fences_and_inline_backticks_are_understood() -> None:
    text = "````md\n```\nnot a close\n```\n````\nuse ```inline``` here"
    fences = scan_fences(text)
    assert len(fences) == 1 and fences[0].ticks == "````" and fences[0].info == "md" and fences[0].end is not None
    assert open_fence(text) is None


def test_open_fence_and_close_open_fence() -> None:
    assert open_fence("text\n```js\nlet a") == "```js"
    assert open_fence("```js\nlet a\n```") is None
    assert close_open_fence("```js\nlet a\n") == "```js\nlet a\n```"
    assert close_open_fence("plain") == "plain"


def test_a_limit_too_small_for_a_reopened_fence_is_refused() -> None:
    with pytest.raises(ValueError):
        cut_markdown("```a-very-long-language-tag\n" + "x" * 100, 30)


def _random_markdown(rng: random.Random) -> str:
    words = ["alpha", "beta", "gamma", "delta.", "epsilon,", "zeta!", "eta?", "`code`", "**bold**", "x" * 30]
    blocks = []
    for _ in range(rng.randint(1, 14)):
        kind = rng.random()
        if kind < 0.3:
            opener = rng.choice(["```", "```python", "```bash", "````text", "  ```yaml"])
            indent = opener[: len(opener) - len(opener.lstrip())]
            ticks = opener.strip().rstrip("abcdefghijklmnopqrstuvwxyz")
            body = "\n".join(" " * rng.randint(0, 8) + "y" * rng.randint(0, 90) for _ in range(rng.randint(1, 25)))
            closed = rng.random() < 0.9  # sometimes the text ends inside a fence, as it does mid-stream
            blocks.append(f"{opener}\n{body}" + (f"\n{indent}{ticks}" if closed else ""))
            if not closed:
                break
        elif kind < 0.45:
            blocks.append("\n".join(f"- {' '.join(rng.choices(words, k=rng.randint(1, 12)))}"
                                    for _ in range(rng.randint(1, 8))))
        else:
            blocks.append(" ".join(rng.choices(words, k=rng.randint(1, 150))))
    return rng.choice(["\n\n", "\n", "\n\n\n"]).join(blocks)


def test_random_markdown_parts_fit_are_balanced_and_reconstruct_the_text() -> None:
    rng = random.Random(20261124)
    for _ in range(600):
        text = _random_markdown(rng)
        limit = rng.randint(40, 700)
        parts = assert_reconstructs(text, limit)
        assert parts == split_markdown(text, limit)
        assert all(len(part) <= limit for part in parts)
        assert all(part.strip() for part in parts)
        for part in parts[:-1]:
            assert open_fence(part) is None, part
        if open_fence(text) is None:
            assert open_fence(parts[-1]) is None


# --- code blocks stay whole (issue 10, part 6) ----------------------------------------------------------------------
#
# The rules: a fenced block that fits in one message is never split - when it straddles the limit it moves whole
# to the next message; a block that does not fit starts a message of its own and is cut only at line ends
# (mid-line only inside a line too long for any message), each piece closed with a fence and the next reopened
# with the same opening line, language tag included. An unclosed block at the end of the text (an answer still
# streaming) is cut exactly as the closed block will be, so a part sealed mid-stream never needs to move.


@dataclass(frozen=True)
class Span:
    """One part mapped back onto the original text: its own text is text[start:own_end] (fence lines the
    splitter added excluded); the next part resumes at `resume` (only whitespace lies in between)."""

    start: int
    own_end: int
    resume: int
    cut: Cut


def spans_of(text: str, limit: int) -> list[Span]:
    spans: list[Span] = []
    position = 0
    for rest, cut in cuts_of(text, limit):
        reopened = len(rest) - (len(text) - position)
        own = cut.head[reopened:]
        if cut.reopen:
            own = own[: own.rindex("\n")]
        assert text[position:].startswith(own)
        spans.append(Span(position, position + len(own), position + cut.consumed - reopened, cut))
        position += cut.consumed - reopened
    return spans


def code_block(language: str, lines: int, width: int = 30, *, start: int = 0) -> str:
    """A closed fence of `lines` numbered lines, each exactly `width` characters."""
    body = "\n".join(f"line_{i:03d} = {'v' * (width - 11)}" for i in range(start, start + lines))
    return f"```{language}\n{body}\n```"


def assert_code_rules(text: str, limit: int) -> list[str]:
    """Check every code-block rule on `split_markdown(text, limit)` (and the reconstruction); return the parts."""
    parts = assert_reconstructs(text, limit)
    spans = spans_of(text, limit)
    assert [s.cut.head for s in spans] == parts
    fences = scan_fences(text)
    for fence in fences:
        block = text[fence.start: fence.end].lstrip(" ") if fence.end is not None else None
        # A closed block that fits in one message is in one part, untouched.
        if block is not None and fence.end - fence.start <= limit:
            assert any(block in part for part in parts), (block, parts)
        # A part holding a block's opening line but not its end starts with that block.
        for span in spans:
            end = len(text) if fence.end is None else fence.end  # an unclosed block runs to the end
            if span.start <= fence.start < span.own_end and end > span.own_end:
                assert not text[span.start: fence.start].strip(), (text[span.start: fence.start], fence.opener)
    for span in spans:
        if not span.cut.reopen:
            continue
        # A cut inside a block: the part ends with its fence closed, the next one reopens it as it was opened.
        [fence] = [f for f in fences if f.holds(span.own_end)]
        assert span.cut.reopen == fence.opener + "\n"
        assert span.cut.head.endswith("\n" + fence.closer)
        gap = text[span.own_end: span.resume]
        if gap and set(gap) == {"\n"}:
            continue  # at a line end
        # Mid-line only inside a line that cannot fit in any part with its fence lines.
        line_start = text.rfind("\n", 0, span.own_end) + 1
        line_end = text.find("\n", span.own_end)
        line = text[line_start: line_end if line_end >= 0 else len(text)]
        room = limit - len(fence.opener) - len(fence.closer) - 2
        assert len(line) > room, f"cut mid-line in a {len(line)}-character line (room {room}): {line!r}"
    return parts


def test_a_block_that_straddles_the_limit_moves_whole_to_the_next_part() -> None:
    intro = "Here is how to configure retries for the client library. " * 5
    block = code_block("python", 10)
    text = f"{intro}\n\n{block}\n\nThat is all there is to it."
    limit = len(intro) + 100  # the block starts well inside the first part and ends past the limit
    parts = assert_code_rules(text, limit)
    assert parts[0] == intro.rstrip() and parts[1].startswith(block)


def test_a_block_moves_whole_even_from_a_part_less_than_half_full() -> None:
    block = code_block("bash", 12)
    text = f"Run this:\n\n{block}\n\nDone."
    limit = len(block) + 5  # the block fits in a part; the text does not
    assert len(text) > limit
    parts = assert_code_rules(text, limit)
    assert parts[0] == "Run this:" and parts[1].startswith(block)


def test_a_fitting_block_at_the_top_of_a_part_is_not_split_at_a_blank_line_inside_it() -> None:
    """A blank line inside the code is not a paragraph break: the block ends the part whole instead."""
    block = code_block("python", 8) + "\n"
    block = block.replace("line_006", "\nline_006")  # a blank line in the upper half of the part
    text = block + "after the block " + "x" * 300  # no break at all after the block
    limit = text.index("after") + 20
    parts = assert_code_rules(text, limit)
    assert parts[0] == block.rstrip()


def test_a_fitting_block_is_not_pushed_out_of_a_part_it_fits_in() -> None:
    """A blank line inside an earlier, whole block must not be mistaken for the best place to cut."""
    block = code_block("python", 6).replace("line_005", "\nline_005")  # in the upper half of the part
    text = "Intro.\n" + block + "\n" + "word " * 80
    limit = len("Intro.\n" + block) + 30
    parts = assert_code_rules(text, limit)
    assert parts[0].startswith("Intro.\n" + block)


def test_a_block_longer_than_a_part_starts_its_own_part_and_is_cut_at_line_ends_only() -> None:
    lines = "\n".join(f"value_{i} = compute(alpha, beta). Then, next; x" for i in range(30))
    block = f"```python\n{lines}\n```"
    text = "Short intro.\n\n" + block + "\n\nAfter."
    parts = assert_code_rules(text, 200)
    assert parts[0] == "Short intro."
    code_parts = [p for p in parts if p.startswith("```python\n")]
    assert len(code_parts) >= 5
    for part in code_parts:
        assert open_fence(part) is None and len(part) <= 200
        code = part.split("\n```")[0].split("\n")[1:]
        assert code and all(line in lines.split("\n") for line in code), f"a code line was cut: {code}"
    assert parts[-1].endswith("```\n\nAfter.")


def test_a_long_line_that_fits_in_a_part_moves_whole_instead_of_being_cut_at_a_sentence() -> None:
    """No line end in the second half of the part is no reason to cut a line that fits in the next part."""
    long_line = "message = 'Retrying now. Then wait, and retry again; " + "x" * 140 + "'"
    text = "```python\n" + "short_value = 1\n" * 7 + long_line + "\n" + "done = True\n" * 10 + "```"
    parts = assert_code_rules(text, 250)
    assert parts[0].endswith("short_value = 1\n```") and parts[1].startswith(f"```python\n{long_line}\n")


def test_a_cut_in_a_long_block_prefers_a_blank_line_in_the_second_half() -> None:
    first = code_block("", 6).removesuffix("\n```")
    text = first + "\n\n" + "\n".join(f"z{i} = {i}" for i in range(40)) + "\n```"
    parts = assert_code_rules(text, len(first) + 30)
    assert parts[0] == first + "\n```"


def test_only_a_line_too_long_for_any_part_is_cut_mid_line() -> None:
    long_line = "call(" + ", ".join(f"argument_{i}" for i in range(40)) + ")"
    text = "```js\nshort();\n" + long_line + "\nshort();\n```"
    parts = assert_code_rules(text, 120)
    assert parts[0] == "```js\nshort();\n```"  # the long line starts a part of its own
    assert all(part.startswith("```js\n") and part.endswith("\n```") for part in parts)


def test_a_reopened_block_keeps_an_indented_opener_and_its_info_string() -> None:
    text = "  ```yaml title=config.yml\n" + "\n".join(f"  key_{i}: value_{i}" for i in range(30)) + "\n  ```"
    parts = assert_code_rules(text, 150)
    assert len(parts) > 2
    assert all(p.startswith("  ```yaml title=config.yml\n") and p.endswith("\n  ```") for p in parts)


def test_the_real_closing_line_is_kept_when_only_it_would_be_left() -> None:
    """A closing line longer than the fence's own (more backticks) that does not fit: the cut goes one line
    earlier, so the next part is not an empty reopened block."""
    text = "```\n" + "a" * 40 + "\n" + "b" * 40 + "\n" + "`" * 8
    parts = assert_code_rules(text, 90)
    assert parts == ["```\n" + "a" * 40 + "\n```", "```\n" + "b" * 40 + "\n" + "`" * 8]


# --- while the answer streams: an unclosed trailing block ---------------------------------------------------------


def test_an_unclosed_block_that_fits_so_far_moves_whole() -> None:
    """The renderer cuts a growing answer as soon as it overflows; the block still streaming must move whole,
    as it will once closed, or a part sealed now would hold half of a block that fits in one message."""
    intro = "Before the code, some explanation of what it does. " * 4
    streaming = intro + "\n```python\nimport os\nprint(os.getcwd())\n"
    cut = cut_markdown(streaming, len(streaming) - 10)
    assert cut.head == intro.rstrip() and cut.reopen == ""
    assert cut.rest(streaming).startswith("```python\nimport os")


def test_an_unclosed_block_longer_than_a_part_is_cut_at_a_line_end_with_its_tag() -> None:
    streaming = "```python\n" + "\n".join(f"step_{i} = run({i})" for i in range(20)) + "\nstep_20 = ru"
    cut = cut_markdown(streaming, 100)
    assert cut.head.endswith("\n```") and cut.reopen == "```python\n"
    assert streaming[cut.consumed - 1] == "\n"  # the rest starts at a line start


def _answer_with_code(rng: random.Random) -> str:
    """Prose and code blocks of all sizes, with blank lines, long lines and sentence breaks inside the code."""
    pieces = []
    for _ in range(rng.randint(1, 6)):
        if rng.random() < 0.5:
            pieces.append(" ".join(rng.choices(["We", "retry.", "the", "client,", "then", "x" * 25, "ok!"],
                                               k=rng.randint(1, 80))))
        else:
            lines = []
            for _ in range(rng.randint(1, 40)):
                kind = rng.random()
                lines.append("" if kind < 0.1 else "    " * rng.randint(0, 2) + (
                    "a, b. c; d " * rng.randint(1, 30) if kind < 0.2 else "y" * rng.randint(1, 60)))
            opener = rng.choice(["```python", "```", "```bash", "````text", "  ```yaml"])
            indent = opener[: len(opener) - len(opener.lstrip())]
            ticks = opener.strip().rstrip("abcdefghijklmnopqrstuvwxyz")
            pieces.append(f"{opener}\n" + "\n".join(lines) + f"\n{indent}{ticks}")
    return rng.choice(["\n\n", "\n"]).join(pieces)


def test_random_answers_keep_blocks_whole_or_cut_them_at_line_ends() -> None:
    rng = random.Random(61010)
    for _ in range(500):
        text = _answer_with_code(rng)
        assert_code_rules(text, rng.randint(80, 800))


def test_cutting_a_streaming_prefix_agrees_with_cutting_the_final_answer() -> None:
    """The renderer cuts the answer as it grows and never moves a sealed part. For that to give the same
    messages as the finished answer would, the first cut of any prefix long enough to need one must be the
    first cut of the whole text (the end of the part may differ only by whitespace dropped at the cut)."""
    rng = random.Random(61011)
    checked = 0
    for _ in range(300):
        text = _answer_with_code(rng)
        limit = rng.randint(80, 800)
        if len(text) <= limit + 2:
            continue
        final = cut_markdown(text, limit)
        for n in sorted(rng.sample(range(limit + 2, len(text) + 1), min(15, len(text) - limit - 1))):
            prefix = cut_markdown(text[:n], limit)
            assert (prefix.head, prefix.reopen) == (final.head, final.reopen), (n, limit, text)
            low, high = sorted((prefix.consumed, final.consumed))
            assert not text[low:high].strip()
            checked += 1
    assert checked > 1000
