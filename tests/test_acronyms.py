"""Acronyms the corpus defines: mined in either order, never from a parenthesis that is not a definition, used to
expand a question for BM25, kept with the lexical index and merged across agents. `HashEmbedder`: milliseconds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from knowledge import hybrid
from knowledge.acronyms import Glossary, mine
from knowledge.analysis import query_terms
from knowledge.ingest import ingest
from knowledge.lexical import ChunkRecord, LexicalSnapshot
from knowledge.store import KnowledgeStore, open_chroma_client
from knowledge.types import Passage
from tests.conftest import make_settings
from tests.fakes.embedder import HashEmbedder


def test_definitions_are_mined_in_either_order() -> None:
    text = ("We sign a **Data Processing Agreement (DPA)** with every customer. Our RPO (recovery point "
            "objective) is one hour.\n# Service level agreement (SLA)")
    assert mine(text) == [("DPA", "data processing agreement"), ("RPO", "recovery point objective"),
                          ("SLA", "service level agreement")]


@pytest.mark.parametrize("text", [
    "Lumenly Inc. (USA) bills customers in the Americas.",  # a capitalised word, not a definition
    "Check the usage limit (E1009).",  # an error code
    "Paying by bank transfer (ACH or wire)",  # more than one token inside
    "SAML single sign-on (see *Single sign-on (SAML) and SCIM*).",  # letters found only in the acronym itself
    "Deleting data (GDPR) is covered elsewhere.",  # the words before do not spell it
])
def test_a_parenthesis_that_is_not_a_definition_is_ignored(text: str) -> None:
    assert mine(text) == []


def test_a_question_gets_the_other_form_of_each_acronym_it_uses() -> None:
    glossary = Glossary.of(["Our RPO (recovery point objective) is one hour."])
    assert glossary.entries == {"rpo": ("recoveri", "point", "object")}
    assert glossary.expand(query_terms("what is your RPO")) == ("rpo", "recoveri", "point", "object")
    assert glossary.expand(query_terms("your recovery point objective")) == ("recoveri", "point", "object", "rpo")
    assert glossary.expand(query_terms("recovery time")) == ("recoveri", "time")  # a part is not the whole


def _record(source: str, heading: str, text: str) -> ChunkRecord:
    return ChunkRecord.of(f"{source}#0", text, {"source": source, "title": heading, "heading": heading,
                                                 "content_hash": "h"})


def test_acronym_expansion_finds_the_section_that_spells_it_out() -> None:
    """The question says "RPO"; the section that answers says "recovery point objective" and shares no word
    with it. With the corpus's own definition, BM25 reaches it and it ranks above a chunk a little closer by
    cosine."""
    records = [
        _record("policy/glossary.md", "Glossary", "RPO (recovery point objective): how much data may be lost."),
        _record("policy/continuity.md", "Business continuity", "The recovery point objective is one hour."),
        _record("policy/refunds.md", "Refunds", "Refunds reach your card within ten days."),
    ]
    snapshot = LexicalSnapshot(records, np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=np.float32))
    query = np.array([1.0, 0.0], dtype=np.float32)
    found = [Passage(r.text, r.source, r.title, r.heading, "policy", cosine)
             for r, cosine in zip(records, (1.0, 0.0, 0.01), strict=True)]

    def ranked(glossary: Glossary) -> list[str]:
        pool = hybrid.candidates("policy", "what is your RPO", query, found, snapshot, glossary=glossary)
        return [p.source for p in hybrid.fuse(pool, 3, hybrid.lexical_weight("what is your RPO"))]

    assert snapshot.glossary.entries == {"rpo": ("recoveri", "point", "object")}
    assert ranked(snapshot.glossary)[1] == "policy/continuity.md"
    assert ranked(Glossary({}))[1] == "policy/refunds.md"  # without the definition, the closer chunk wins


def _write(root: Path, rel: str, title: str, body: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"---\ntitle: {title}\n---\n# {title}\n\n## Details\n{body}\n", encoding="utf-8")


def _open(data_dir: Path) -> KnowledgeStore:
    return KnowledgeStore(open_chroma_client(make_settings(data_dir)), HashEmbedder(),
                          lexical_dir=data_dir / "lexical")


def test_acronyms_are_saved_with_the_index_rebuilt_when_missing_and_shared_across_agents(tmp_path: Path) -> None:
    docs, data = tmp_path / "docs", tmp_path / "data"
    _write(docs, "policy/continuity.md", "Business continuity", "Our RPO (recovery point objective) is one hour.")
    _write(docs, "technical/backups.md", "Backups", "Snapshots run hourly to meet the recovery point objective.")
    _write(docs, "technical/keys.md", "API keys", "Rotate a key by creating a new one.")
    ingest([docs], _open(data))
    saved = json.loads((data / "lexical" / "policy" / "records.json").read_text(encoding="utf-8"))
    assert saved["acronyms"] == {"rpo": ["recoveri", "point", "object"]}

    shutil.rmtree(data / "lexical")
    store = _open(data)
    assert store.lexical("policy").glossary.entries == {"rpo": ("recoveri", "point", "object")}
    assert store._lexical.last_sync["policy"].origin == "empty"
    assert len(store.lexical("technical").glossary) == 0  # the technical documents define nothing
    vector = store.embedder.embed_query("RPO")
    found = store.search("technical", vector, 2)
    by_source = {c.passage.source: c.lexical for c in hybrid.candidates(
        "technical", "RPO", vector, found, store.lexical("technical"), glossary=store.glossary())}
    assert by_source["technical/backups.md"] > 0 and by_source["technical/keys.md"] == 0
    assert store.retrieve("technical", "RPO", 1)[0].source == "technical/backups.md"
