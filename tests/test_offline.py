"""The offline answer: readable Markdown quoting whole sentences of the best passages, or a pointer to a human."""

from __future__ import annotations

from functools import cache

from core.offline import compose_offline_answer, stream_pieces
from core.quoting import units
from knowledge.chunking import chunk_document
from knowledge.loaders import load_document
from knowledge.types import Passage, Section
from tests.conftest import DOCS


def passage(heading: str, text: str = "Enterprise costs from $1,200 per month.", score: float = 0.7,
            source: str = "billing/plans-and-pricing.md", title: str = "Plans and pricing") -> Passage:
    return Passage(text=text, source=source, title=title, heading=heading, agent="billing", score=score)


@cache
def corpus_chunk(source: str, heading: str) -> Passage:
    """A chunk of the shipped corpus as retrieval returns it."""
    document = load_document(DOCS / source, DOCS)
    assert document is not None
    chunk = next(c for c in chunk_document(document) if c.heading == heading)
    return Passage(chunk.text, source, chunk.title, chunk.heading, document.agent, 0.6)


def quoted_units(answer: str) -> list[str]:
    return [u.text for u in units(answer)]


def test_the_two_cuts_from_the_issue_are_whole_sentences_now() -> None:
    """Issue 21 saw "…Rotate immediately if a key was exposed, for example pushed" and "…the browser SDK uses a
    separate, write-only **project t": asked about exactly those sentences, they are quoted whole."""
    rotating = corpus_chunk("technical/api-authentication.md", "API authentication > Rotating a key")
    keys = corpus_chunk("technical/api-authentication.md", "API authentication > API keys")
    text, _ = compose_offline_answer([rotating], support_email="s@x.io",
                                     question="a key was pushed to a public repository, what now")
    assert ("Rotate immediately if a key was exposed, for example pushed to a public repository: revoke first, "
            "then create the replacement.") in text
    text, _ = compose_offline_answer([keys], support_email="s@x.io", question="which token does the browser use")
    assert ("the browser SDK uses a separate, write-only **project token** that is safe to expose in a web "
            "page.") in text
    for answer in (compose_offline_answer([p], support_email="s@x.io")[0] for p in (rotating, keys)):
        source_units = set(quoted_units(rotating.text) + quoted_units(keys.text))
        body = answer.split("\n\n", 2)[2].rsplit("\n\nIf this", 1)[0]
        assert set(quoted_units(body)) <= source_units, "only whole sentences of the passage"


def test_every_quote_of_the_corpus_is_whole_units_with_balanced_markdown() -> None:
    from core.quoting import quote

    checked = 0
    for path in sorted(DOCS.rglob("*.md")):
        document = load_document(path, DOCS)
        if document is None:
            continue
        for chunk in chunk_document(document):
            whole = set(u.text for u in units(chunk.text))
            for budget in (120, 300):
                text = quote(chunk.text, max_units=2, max_chars=budget)
                assert set(u.text for u in units(text)) <= whole, (chunk.id, text)
                assert text.count("**") % 2 == 0 and text.count("`") % 2 == 0, (chunk.id, text)
                checked += 1
    assert checked > 400


def test_the_section_that_answers_comes_first_one_block_per_source_with_its_source() -> None:
    best = passage("Plans and pricing > Enterprise", score=0.7)
    same_document = passage("Plans and pricing > Pro", "Pro costs $199 per month.", score=0.69)
    other = passage("Upgrading your plan > Upgrade to Enterprise", "Write to sales@lumenly.io to upgrade.",
                    score=0.6, source="billing/upgrading-your-plan.md", title="Upgrading your plan")
    text, used = compose_offline_answer([best, same_document, other], support_email="support@lumenly.io")
    assert used == [best, other]
    assert text.index("**Plans and pricing — Enterprise** · _billing/plans-and-pricing.md_") < text.index(
        "**Upgrading your plan — Upgrade to Enterprise** · _billing/upgrading-your-plan.md_")
    assert "Pro costs $199" not in text
    assert text.startswith("_Offline mode:") and text.rstrip().endswith("contact support@lumenly.io.")


def test_a_source_with_an_address_is_linked() -> None:
    synced = passage("Refunds > Policy", "Annual plans are refundable within 30 days.", title="Refunds",
                     source="https://help.example.com/refunds")
    text, _ = compose_offline_answer([synced], support_email="s@x.io")
    assert "**[Refunds — Policy](https://help.example.com/refunds)**" in text


def test_a_small_chunk_is_quoted_from_its_section_starting_where_it_matched() -> None:
    hit = passage("SSO > Setting up SAML > Okta", "In Okta, create an app. Paste the ACS URL.", title="SSO",
                  source="technical/sso.md")
    section = Section("SSO > Setting up SAML", "1. Open settings.\n2. Upload metadata.\n\n**Okta**\n\n"
                      "In Okta, create an app. Paste the ACS URL.\n\n**Entra ID**\n\nIn Entra, add an app.")
    text, _ = compose_offline_answer([Passage(**{**_fields(hit), "section": section})], support_email="s@x.io")
    assert "In Okta, create an app. Paste the ACS URL." in text
    assert "Open settings" not in text and "Entra" not in text  # its own subsection, not the neighbours


def _fields(p: Passage) -> dict[str, object]:
    return {name: getattr(p, name) for name in Passage.__slots__}


def test_nothing_relevant_points_to_a_human() -> None:
    text, used = compose_offline_answer([passage("Plans and pricing", score=0.01)], support_email="help@x.io")
    assert used == [] and "couldn't find anything" in text and "help@x.io" in text


def test_streamed_pieces_rebuild_the_text_exactly() -> None:
    text = "**Plans** — Basic  costs $49.\n\nPro\tcosts $199 "
    assert "".join(stream_pieces(text)) == text


def test_hard_wrapped_prose_is_joined_but_lists_and_code_keep_their_lines() -> None:
    from core.quoting import quote

    text = ("Enterprise costs from $1,200 per month,\nbilled annually.\n\n- one\n- two, which\n  wraps\n\n"
            "```\na\n\nb\n```")
    assert quote(text, max_units=4) == ("Enterprise costs from $1,200 per month, billed annually.\n\n- one\n"
                                        "- two, which wraps\n\n```\na\n\nb\n```")
