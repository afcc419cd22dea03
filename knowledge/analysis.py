"""Turning text into the terms the lexical index counts: lower-cased words, Snowball-stemmed, stopwords out.

Support questions hinge on exact identifiers ("E1008", "lum_test", "v1", "X-Request-Id", "api.lumenly.io")
that a sentence embedding blurs. A compound such as `lum_test` or `Lumenly-Version` is kept whole (unstemmed, so
it only matches itself) *and* split into its parts (stemmed), so "version header" still finds
`Lumenly-Version`. Stemming is PyStemmer's English Snowball stemmer (C, with its own word cache), so "charged",
"charges" and "charging" meet. Question words ("how", "where", "can") are stopwords: every question has them.
"""

from __future__ import annotations

import functools
import re

import Stemmer

_WORD = re.compile(r"[a-z0-9]+(?:[._\-/][a-z0-9]+)*")
_PARTS = re.compile(r"[._\-/]")
STOPWORDS = frozenset(
    "a an and are as at be been but by can could do does did for from get got has have how i if in into is it "
    "its me my no not of on or our please should so such than that the their them then there these they this "
    "to up us was we what when where which who why will with would you your yours also any just".split()
)

_stemmer = Stemmer.Stemmer("english")


def terms(text: str) -> list[str]:
    """The index terms of a text (repeats kept: BM25 counts them). Compounds come after the words."""
    words: list[str] = []
    compounds: list[str] = []
    for match in _WORD.finditer(text.lower()):
        word = match.group()
        parts = _PARTS.split(word)
        if len(parts) > 1:
            compounds.append(word)  # the identifier itself, unstemmed: it only matches itself
        words.extend(p for p in parts if p not in STOPWORDS and (len(p) > 1 or p.isdigit()))
    return (_stemmer.stemWords(words) if words else []) + compounds


@functools.lru_cache(maxsize=4_096)
def query_terms(text: str) -> tuple[str, ...]:
    """The distinct terms of a question (each counted once: a repeated word is not a stronger one)."""
    return tuple(dict.fromkeys(terms(text)))
