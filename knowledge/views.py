"""Section views: what each chunk's section is called, embedded once, and which chunks are a document's lead.

Why: a chunk's vector mixes its heading with up to a thousand characters of body, so a question that names the
topic ("set up SAML with Azure AD", "what happens to our data when the contract ends") can sit closer to a
neighbouring section that happens to share more words. The section's own name, "document title: heading"
embedded alone, says what the section is about. Its cosine with the question is blended into the ranking with
a small weight (`knowledge.hybrid`): at query time, one product over the candidates' few rows.

A document's *lead* is the text under its title, before its first section: an overview that names every topic
of the document ("this article explains seats and overages, and how to keep them under control"), so its
vector is near every question about the document while the answer is in a section. A lead is recognised from
the heading paths alone (a top-level heading in a document that has sections), and the ranking gives it a
small handicap. A document without sections has no lead.

Vectors are computed when the lexical index syncs (ingestion, or a rebuild from the store): only for headings
not seen before, so a re-ingested document whose headings did not change costs nothing here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Embed = Callable[[list[str]], np.ndarray]  # texts -> (n, dim) unit rows (`Embedder.embed_documents`)


def view_text(title: str, heading: str) -> str:
    """"Title: leaf heading", or the title alone for text directly under it."""
    leaf = heading.rsplit(" > ", 1)[-1].strip() if heading else ""
    return f"{title}: {leaf}" if leaf and leaf != title else title


def leads(sources: Sequence[str], headings: Sequence[str]) -> np.ndarray:
    """Per chunk (in reading order, grouped by document): True for the lead of a document with sections."""
    nested = {source for source, heading in zip(sources, headings, strict=True) if " > " in heading}
    return np.array([source in nested and " > " not in heading
                     for source, heading in zip(sources, headings, strict=True)], dtype=bool)


def view_vectors(texts: Sequence[str], known: dict[str, np.ndarray], embed: Embed | None, dim: int) -> np.ndarray:
    """One unit row per text: from `known` (text -> vector) when there, else embedded (each distinct text once).
    Without an embedder the rows are zero, which leaves the ranking to the chunk's own vector."""
    missing = list(dict.fromkeys(t for t in texts if t not in known))
    fresh = dict(known)
    if missing and embed is not None:
        fresh.update(zip(missing, np.asarray(embed(missing), dtype=np.float32), strict=True))
    zero = np.zeros(dim, dtype=np.float32)
    rows = [fresh.get(t, zero) for t in texts]
    return np.vstack(rows).astype(np.float32) if rows else np.zeros((0, dim), dtype=np.float32)
