"""The Markdown splitter: parts fit, fences stay balanced, nothing but whitespace is lost at a cut."""

from __future__ import annotations

import random

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
