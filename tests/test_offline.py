"""The offline answer: readable Markdown quoting the best passages, or a pointer to a human."""

from core.offline import compose_offline_answer, stream_pieces
from knowledge.types import Passage


def passage(heading: str, text: str = "Enterprise costs from $1,200 per month.", score: float = 0.7) -> Passage:
    return Passage(text=text, source="billing/plans-and-pricing.md", title="Plans and pricing", heading=heading,
                   agent="billing", score=score)


def test_sections_are_labelled_title_then_section_without_repeating_the_title() -> None:
    text, used = compose_offline_answer([passage("Plans and pricing > Enterprise"), passage("Plans and pricing")],
                                        support_email="support@lumenly.io")
    assert "**Plans and pricing — Enterprise**" in text and "Plans and pricing — Plans and pricing" not in text
    assert "\n**Plans and pricing**\n\n" in text and len(used) == 2
    assert text.startswith("_Offline mode:") and text.rstrip().endswith("contact support@lumenly.io.")


def test_nothing_relevant_points_to_a_human() -> None:
    text, used = compose_offline_answer([passage("Plans and pricing", score=0.01)], support_email="help@x.io")
    assert used == [] and "couldn't find anything" in text and "help@x.io" in text


def test_streamed_pieces_rebuild_the_text_exactly() -> None:
    text = "**Plans** — Basic  costs $49.\n\nPro\tcosts $199 "
    assert "".join(stream_pieces(text)) == text


def test_hard_wrapped_prose_is_joined_but_lists_and_code_keep_their_lines() -> None:
    from core.offline import unwrap

    text = ("Enterprise costs from $1,200 per month,\nbilled annually.\n\n- one\n- two\n\n"
            "```\na\n\nb\nc\n```\nAfter the\ncode.")
    assert unwrap(text) == ("Enterprise costs from $1,200 per month, billed annually.\n\n- one\n- two\n\n"
                            "```\na\n\nb\nc\n```\nAfter the code.")
