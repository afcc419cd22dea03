"""What the source tests share: a store on a private Chroma folder with an embedder that counts its work, a
quick HTTP policy (no backoff between retries; Retry-After is still honoured), and readers of what a sync left."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from knowledge.sources.config import SourceSpec
from knowledge.sources.http import HttpPolicy
from knowledge.sources.state import SourceState, StateStore
from knowledge.sources.sync import SyncReport, sync_source
from knowledge.store import KnowledgeStore, open_chroma_client
from tests.conftest import make_settings
from tests.fakes.embedder import HashEmbedder

FAST = HttpPolicy(timeout_s=5, retries=2, backoff_s=0, max_retry_after_s=5)


class CountingEmbedder(HashEmbedder):
    """HashEmbedder that counts the texts it embedded: "zero embeddings" is `embedded == 0`."""

    def __init__(self) -> None:
        super().__init__()
        self.embedded = 0

    def embed_documents(self, texts: Any) -> Any:
        self.embedded += len(texts)
        return super().embed_documents(texts)


class Harness:
    def __init__(self, data_dir: Path) -> None:
        self.embedder = CountingEmbedder()
        self.store = KnowledgeStore(open_chroma_client(make_settings(data_dir)), self.embedder)
        self.states = StateStore(data_dir / "sources")

    def sync(self, spec: SourceSpec, env: dict[str, str] | None = None, **options: Any) -> SyncReport:
        self.embedder.embedded = 0
        return sync_source(spec, self.store, self.states, env=env or {}, policy=options.pop("policy", FAST),
                           **options)

    def state(self, name: str) -> SourceState:
        return self.states.load(name)

    def sources(self) -> dict[str, str]:
        """store source → agent, for everything synced from a source (not folders)."""
        return {s: agent for s, (agent, _, root) in self.store.file_hashes().items() if root.startswith("source:")}

    def text(self, source: str) -> str:
        """Every chunk of one document, in order."""
        agent = self.store.file_hashes()[source][0]
        got = self.store._collection(agent).get(where={"source": source}, include=["documents", "metadatas"])
        ordered = sorted(zip(got["metadatas"], got["documents"]), key=lambda pair: pair[0]["index"])
        return "\n".join(text for _, text in ordered)

    def title(self, source: str) -> str:
        agent = self.store.file_hashes()[source][0]
        got = self.store._collection(agent).get(where={"source": source}, include=["metadatas"])
        return str(got["metadatas"][0]["title"])

    def headings(self, source: str) -> set[str]:
        agent = self.store.file_hashes()[source][0]
        got = self.store._collection(agent).get(where={"source": source}, include=["metadatas"])
        return {str(m["heading"]) for m in got["metadatas"]}
