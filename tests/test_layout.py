"""The pure layout of a reply: which text each message shows, measured on the rendered text. No clock, no I/O."""

from __future__ import annotations

from bots.layout import Layout, ReplyState
from bots.surface import AgentTag, ReplyView, render_plain

TAG = AgentTag("technical", "Technical")
STREAMING = ReplyState(TAG, "streaming")
DONE = ReplyState(TAG, "done")


def words(n: int) -> str:
    return " ".join(f"word{i}" for i in range(n))


def test_a_short_answer_is_one_message_with_the_tag_and_the_marker() -> None:
    [view] = Layout(render_plain, 200).views("Retry with backoff", STREAMING)
    assert view == ReplyView(body="Retry with backoff", agent=TAG, status="streaming", is_last_part=True)
    assert render_plain(view) == "*Technical*\nRetry with backoff ▌"


def test_every_rendered_message_fits_and_the_parts_spell_the_answer() -> None:
    layout = Layout(render_plain, 200)
    answer = words(150)
    views = layout.views(answer, DONE)
    assert len(views) > 3
    assert all(len(render_plain(v)) <= 200 for v in views)
    assert " ".join(v.body.strip() for v in views).split() == answer.split()
    assert [v.is_last_part for v in views] == [False] * (len(views) - 1) + [True]
    assert [v.is_continuation for v in views] == [False] + [True] * (len(views) - 1)


def test_a_finished_message_keeps_its_cut_while_the_answer_grows() -> None:
    layout = Layout(render_plain, 200)
    first = layout.views(words(60), STREAMING)
    later = layout.views(words(120), STREAMING)
    assert len(first) >= 2
    assert [v.body for v in later[: len(first) - 1]] == [v.body for v in first[:-1]]


def test_after_a_refusal_the_refused_message_is_cut_smaller() -> None:
    layout = Layout(render_plain, 400)
    before = layout.views(words(200), DONE)
    layout.refused(0)
    after = layout.views(words(200), DONE)
    assert len(render_plain(after[0])) <= 400 - 40 < len(render_plain(before[0]))
    assert len(after) >= len(before)


def test_a_code_block_that_fits_a_message_moves_whole_to_the_next() -> None:
    code = "```python\n" + "\n".join(f"print({i})" for i in range(10)) + "\n```"
    answer = words(25) + "\n\n" + code + "\n\nDone."
    views = Layout(render_plain, 260).views(answer, DONE)
    holding = [v for v in views if "print(0)" in v.body]
    assert len(holding) == 1 and "print(9)" in holding[0].body and holding[0].body.count("```") == 2


def test_a_final_footer_that_does_not_fit_moves_on_instead_of_cutting_the_last_code_block() -> None:
    from core.events import SourceRef

    code = "```python\n" + "\n".join(f"client.upload('part_{i:02}.bin')  # part {i}" for i in range(9)) + "\n```"
    sources = tuple(SourceRef(f"A rather long document title number {i} about uploads", f"t/{i}.md")
                    for i in range(3))
    done = ReplyState(TAG, "done", sources)
    layout = Layout(render_plain, 500)
    assert len(render_plain(done.view(code, 0, True))) > 500 >= len(render_plain(done.view(code, 0, False)))
    views = layout.views(code, done)
    assert [v.body for v in views] == [code, ""]  # the block whole in one message, the sources in the next
    assert "Sources" in render_plain(views[1]) and all(len(render_plain(v)) <= 500 for v in views)
