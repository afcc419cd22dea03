"""Chunking by heading: heading paths, size target with overlap, whole code fences, chunk metadata."""

from __future__ import annotations

from knowledge.chunking import MAX_CHARS, OVERLAP_CHARS, TARGET_CHARS, chunk_document
from knowledge.loaders import Document


def _doc(text: str, **kwargs) -> Document:
    values = {"source": "technical/guide.md", "title": "Guide", "agent": "technical", "text": text,
              "content_hash": "abc123"}
    values.update(kwargs)
    return Document(**values)  # type: ignore[arg-type]


def test_chunks_follow_headings_and_keep_their_path() -> None:
    text = "# Guide\nIntro.\n\n## Setup\nStep one.\n\n### Okta\nOkta steps.\n\n## Errors\nE1 means x."
    chunks = chunk_document(_doc(text))
    assert [c.heading for c in chunks] == ["Guide", "Guide > Setup", "Guide > Setup > Okta", "Guide > Errors"]
    assert [c.text for c in chunks] == ["Intro.", "Step one.", "Okta steps.", "E1 means x."]


def test_embedded_text_carries_title_and_heading_but_the_stored_text_is_clean() -> None:
    chunks = chunk_document(_doc("# Upgrading\n\n## Proration\nYou pay the difference.", title="Upgrading"))
    assert chunks[0].embed_text == "Upgrading — Upgrading > Proration\nYou pay the difference."
    assert chunks[0].text == "You pay the difference."


def test_every_chunk_keeps_source_title_agent_index_and_content_hash() -> None:
    text = "# Guide\n\n" + "\n\n".join(f"## Part {i}\nBody {i}." for i in range(4))
    chunks = chunk_document(_doc(text, cache=True))
    assert [c.index for c in chunks] == [0, 1, 2, 3]
    assert [c.id for c in chunks] == [f"technical/guide.md#{i}" for i in range(4)]
    assert {(c.source, c.title, c.agent, c.content_hash, c.cache) for c in chunks} == {
        ("technical/guide.md", "Guide", "technical", "abc123", True)}


def test_deeper_headings_stay_in_the_body_and_a_new_h2_resets_the_path() -> None:
    text = "# G\n\n## A\n### A1\nx\n#### Not split here\ny\n\n## B\nz"
    chunks = chunk_document(_doc(text))
    assert [c.heading for c in chunks] == ["G > A > A1", "G > B"]
    assert "#### Not split here" in chunks[0].text


def test_long_sections_are_split_near_the_target_with_overlap() -> None:
    body = "\n\n".join(f"Paragraph {i} " + "words " * 40 for i in range(12))
    chunks = chunk_document(_doc(f"# Doc\n\n## Long\n{body}"))
    assert len(chunks) > 3 and all(c.heading == "Doc > Long" for c in chunks)
    assert all(len(c.text) <= TARGET_CHARS + OVERLAP_CHARS + 10 for c in chunks)
    assert all(len(c.text) >= TARGET_CHARS // 2 for c in chunks[:-1])
    for previous, current in zip(chunks, chunks[1:]):
        overlap = current.text.split("\n\n")[0]
        assert 0 < len(overlap) <= OVERLAP_CHARS and previous.text.endswith(overlap)


def test_a_code_fence_is_kept_whole_and_hash_lines_inside_are_not_headings() -> None:
    code = "```python\n# not a heading\n" + "\n".join(f"x{i} = {i}" for i in range(30)) + "\n```"
    body = "\n\n".join(f"Paragraph {i} " + "words " * 40 for i in range(6))
    chunks = chunk_document(_doc(f"# Doc\n\n## Long\n{body}\n\n{code}\n\nAfter the code."))
    assert all(c.text.count("```") % 2 == 0 for c in chunks)
    holding = [c for c in chunks if "# not a heading" in c.text]
    assert len(holding) == 1 and "x29 = 29" in holding[0].text and holding[0].heading == "Doc > Long"


def test_a_fence_longer_than_a_chunk_is_cut_between_lines_and_refenced() -> None:
    code = "```sh\n" + "\n".join(f"curl https://api.example.com/v1/items/{i}  # call {i}" for i in range(80)) + "\n```"
    chunks = chunk_document(_doc(f"# Doc\n\n{code}"))
    assert len(chunks) > 1 and all(len(c.text) <= MAX_CHARS + OVERLAP_CHARS for c in chunks)
    for chunk in chunks:
        lines = chunk.text.splitlines()
        assert lines[0] == "```sh" and lines[-1] == "```" and chunk.text.count("```") == 2
    joined = "\n".join(chunks_line for c in chunks for chunks_line in c.text.splitlines()[1:-1])
    assert joined.count("curl ") == 80


def test_one_enormous_sentence_is_still_cut_to_size() -> None:
    chunks = chunk_document(_doc("# Doc\n\n" + "x" * (MAX_CHARS * 3)))
    assert len(chunks) >= 3 and all(len(c.text) <= MAX_CHARS + OVERLAP_CHARS for c in chunks)


def test_a_document_without_headings_is_one_section_under_no_heading() -> None:
    chunks = chunk_document(_doc("Just a note about proxies."))
    assert [(c.heading, c.text) for c in chunks] == [("", "Just a note about proxies.")]
    assert chunks[0].embed_text.startswith("Guide\n")
