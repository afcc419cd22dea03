"""Cutting Markdown into whole quotable units: sentences never end inside a span or after an abbreviation."""

from __future__ import annotations

from core.quoting import quote, sentences, units


def test_sentences_end_only_at_real_sentence_ends() -> None:
    text = ("Lumenly Inc. charges from the US, e.g. by card. Use `client.init(). Then` once! See *Refunds. Now* "
            "and [the SLA. Page](https://x.io/a.b). Version 1.5 is out? Yes.")
    assert sentences(text) == [
        "Lumenly Inc. charges from the US, e.g. by card.",
        "Use `client.init(). Then` once!",
        "See *Refunds. Now* and [the SLA. Page](https://x.io/a.b).",
        "Version 1.5 is out?",
        "Yes.",
    ]


def test_units_keep_list_items_tables_and_code_whole() -> None:
    text = ("Two kinds:\n\n- live keys, which write\n  to production;\n- test keys.\n\n"
            "| a | b |\n|---|---|\n| 1 | 2 |\n\n"
            "```python\nx = 1\n\ny = 2\n```\n\n**Okta**\n\nIn Okta. Then.")
    assert [(u.kind, u.text) for u in units(text)] == [
        ("sentence", "Two kinds:"),
        ("item", "- live keys, which write to production;"),
        ("item", "- test keys."),
        ("table", "| a | b |\n|---|---|\n| 1 | 2 |"),
        ("code", "```python\nx = 1\n\ny = 2\n```"),
        ("marker", "**Okta**"),
        ("sentence", "In Okta."),
        ("sentence", "Then."),
    ]


def test_a_quote_keeps_a_list_with_its_announcement_and_never_ends_on_one() -> None:
    text = "Create keys in Settings. There are two kinds:\n\n- live keys;\n- test keys.\n\nScopes differ."
    assert quote(text, max_units=2) == "Create keys in Settings."  # the announcement without its list: dropped
    assert quote(text, max_units=4) == "Create keys in Settings. There are two kinds:\n\n- live keys;\n- test keys."
    assert quote(text, question="which test keys", max_units=3) == "There are two kinds:\n\n- live keys;\n- test keys."
    assert quote(text, question="which test keys", max_units=2) == "- live keys;\n- test keys."


def test_a_quote_starts_at_its_anchor_and_skips_the_tail_of_a_cut_sentence() -> None:
    section = "First sentence here. Second one. Third one. Fourth one."
    assert quote(section, anchor="Third one. Fourth one.", max_units=1) == "Third one."
    assert quote("of a sentence cut by the chunker. A whole one follows.") == "A whole one follows."
    assert quote("Intro.\n\n**Why it fails**\n\n- a clock off by minutes", question="why it fails") == (
        "- a clock off by minutes")  # the subsection's label is the quote's heading line already


def test_the_budget_counts_characters_but_never_cuts_a_unit() -> None:
    text = "A short one. " + "A long sentence that goes on " * 10 + "to its end. After."
    assert quote(text, max_chars=40) == "A short one."
