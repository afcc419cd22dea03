"""Sections: a chunk's enclosing section rebuilt from the chunks (windows joined without their overlap)."""

from __future__ import annotations

from knowledge.chunking import chunk_document
from knowledge.loaders import Document
from knowledge.sections import join_windows, section_of


def _document(text: str) -> Document:
    return Document(source="technical/sso.md", title="SSO", agent="technical", text=text, content_hash="h")


def test_windows_of_a_long_section_join_back_into_its_text_without_the_repeated_overlap() -> None:
    paragraphs = [f"Paragraph {i} says something useful about single sign-on, step {i}, in some detail here."
                  for i in range(30)]
    body = "\n\n".join(paragraphs)
    chunks = chunk_document(_document(f"# SSO\n\n## Setup\n\n{body}\n"))
    assert len(chunks) > 2 and chunks[1].text.split("\n\n")[0] not in paragraphs  # the overlap is a fragment
    assert join_windows([c.text for c in chunks]) == body


def test_a_subsection_hit_is_shown_with_its_second_level_section_when_that_fits() -> None:
    text = ("# SSO\n\nIntro.\n\n## Setting up SAML\n\n1. Open settings.\n2. Upload metadata.\n\n"
            "### Okta\n\nIn Okta, create an app.\n\n### Entra ID\n\nIn Entra, add an app.\n\n## SCIM\n\nTokens.\n")
    chunks = [(c.heading, c.text) for c in chunk_document(_document(text))]
    okta = next(i for i, (heading, _) in enumerate(chunks) if heading.endswith("Okta"))
    section = section_of(chunks, okta)
    assert section is not None and section.heading == "SSO > Setting up SAML"
    assert section.text == ("1. Open settings.\n2. Upload metadata.\n\n**Okta**\n\nIn Okta, create an app.\n\n"
                            "**Entra ID**\n\nIn Entra, add an app.")
    assert section_of(chunks, okta, budget=40) is None  # too long to show whole: the chunk alone is shown
    scim = next(i for i, (heading, _) in enumerate(chunks) if heading.endswith("SCIM"))
    assert section_of(chunks, scim) is None  # one chunk, no subsections: nothing larger to show
    assert section_of(chunks, 0) is None  # the title's intro: never the whole document
