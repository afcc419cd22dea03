"""Incremental, idempotent ingestion.

Unchanged files are skipped by content hash, changed files replace their chunks, and files gone from an
ingested folder (or now marked `ingest: false`) lose theirs. Running it twice leaves the same store. Vectors are
computed in batches, so the model runs on full batches instead of one file at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from knowledge.chunking import Chunk, chunk_document
from knowledge.embeddings import Embedder
from knowledge.loaders import UnreadableFile, discover, load_document, source_for
from knowledge.store import EmbeddingMismatchError, KnowledgeStore

EMBED_BATCH = 64
Progress = Callable[[str, int, int], None]  # (file being read, files done, files in total)


@dataclass
class IngestReport:
    """What one ingestion did. `files_skipped` are unchanged files; `files_failed` could not be read."""

    files_seen: int = 0
    files_added: int = 0
    files_updated: int = 0
    files_unchanged: int = 0
    files_removed: int = 0
    files_failed: int = 0
    files_excluded: int = 0  # `ingest: false`
    chunks_added: int = 0
    chunks_updated: int = 0
    chunks_removed: int = 0
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def files_skipped(self) -> int:
        return self.files_unchanged

    @property
    def files_read(self) -> int:
        return self.files_added + self.files_updated + self.files_unchanged

    @property
    def chunks_written(self) -> int:
        return self.chunks_added + self.chunks_updated

    @property
    def changed(self) -> bool:
        return bool(self.chunks_added or self.chunks_updated or self.chunks_removed)


def _same_model(store: KnowledgeStore, embedder: Embedder | None, caller: str) -> Embedder:
    """The store's own embedder, or the given one when it is the same model (vectors of another would not be
    comparable with the stored ones: refused)."""
    if embedder is not None and embedder.name != store.embedder.name:
        raise EmbeddingMismatchError(
            f"{caller}() was given the embedding model {embedder.name} for a store opened with "
            f"{store.embedder.name}; open the store with the same embedder."
        )
    return embedder or store.embedder


def ingest(
    paths: Sequence[Path],
    store: KnowledgeStore,
    embedder: Embedder | None = None,
    *,
    rebuild: bool = False,
    progress: Progress | None = None,
) -> IngestReport:
    """Bring the store in line with the files under `paths` (files or folders).

    `embedder` defaults to the store's own; passing another model is refused (its vectors would not be
    comparable with the stored ones). `rebuild` empties the store first: the way to change embedding model.
    Files are filed under the store's agents (`docs/<agent>/` or `agent:` front matter); others are warnings."""
    embedder = _same_model(store, embedder, "ingest")
    started = time.perf_counter()
    report = IngestReport()
    if rebuild:
        store.clear()
    known = store.file_hashes()
    agents = store.agents
    files = discover(list(paths), agents)
    roots = {str(p.resolve()) for p in paths if p.is_dir()}
    seen: dict[str, str] = {}  # source -> the file it was read from in this run
    pending: list[tuple[Chunk, str]] = []

    for done, (file, root) in enumerate(files, start=1):
        if progress:
            progress(str(file), done, len(files))
        report.files_seen += 1
        source = source_for(file, root)
        if source in seen:
            report.warnings.append(f"{file}: same path ({source}) as {seen[source]}, skipped")
            report.files_failed += 1
            continue
        try:
            document = load_document(file, root, agents)
        except UnreadableFile as warning:
            report.warnings.append(str(warning))
            report.files_failed += 1
            seen[source] = str(file)  # keeps what an earlier run stored from it: a bad save loses nothing
            continue
        except OSError as exc:
            report.warnings.append(f"{file}: cannot be read ({exc.strerror or exc}), skipped")
            report.files_failed += 1
            seen[source] = str(file)
            continue
        if document is None:  # `ingest: false`: treated as absent, so chunks from an earlier run go
            report.files_excluded += 1
            continue
        seen[source] = str(file)
        previous = known.get(source)
        if previous and previous[:2] == (document.agent, document.content_hash):
            report.files_unchanged += 1
            continue
        chunks = chunk_document(document)
        if previous:
            store.remove_source(source)
            report.files_updated += 1
            report.chunks_updated += len(chunks)
        else:
            report.files_added += 1
            report.chunks_added += len(chunks)
        pending.extend((chunk, str(root)) for chunk in chunks)
        if len(pending) >= EMBED_BATCH:
            _write(store, embedder, pending)
            pending = []
    if pending:
        _write(store, embedder, pending)

    for source in sorted(set(known) - set(seen)):
        _, _, root = known[source]
        if root in roots and (not (Path(root) / source).exists()
                              or _is_excluded(Path(root) / source, root, agents)):
            report.chunks_removed += store.remove_source(source)
            report.files_removed += 1
    store.sync_lexical()  # the BM25 side: only chunks written above are tokenised; saved in the data directory
    report.seconds = time.perf_counter() - started
    return report


def _is_excluded(path: Path, root: str, agents: Sequence[str]) -> bool:
    try:
        return load_document(path, Path(root), agents) is None
    except (OSError, UnreadableFile):
        return False


def _write(store: KnowledgeStore, embedder: Embedder, pending: list[tuple[Chunk, str]]) -> None:
    chunks = [chunk for chunk, _ in pending]
    vectors = embedder.embed_documents([c.embed_text for c in chunks])
    store.add_chunks(chunks, vectors, roots=[root for _, root in pending])


# --- documents already loaded (knowledge sources, knowledge/sources/) ---------------------------------------------
from collections.abc import Collection, Iterable  # noqa: E402 - this section was appended; its imports stay with it

from knowledge.loaders import Document  # noqa: E402


def ingest_documents(
    documents: Iterable[Document],
    store: KnowledgeStore,
    *,
    root: str,
    keep: Callable[[], Collection[str]] | Collection[str] = (),
    embedder: Embedder | None = None,
    progress: Progress | None = None,
) -> IngestReport:
    """Bring the chunks filed under `root` in line with already-loaded `documents` (a synced source's).

    Same rules as `ingest()`: a document whose agent and content hash are unchanged is skipped (not re-embedded),
    a changed one replaces its chunks, vectors are computed in batches. `root` marks the chunks as this caller's
    (a source's `source:<name>`); once `documents` is exhausted, every source under `root` that was neither in
    `documents` nor in `keep` (those known unchanged or failed this time, left as they are) is removed. `keep` may
    be a callable, read after `documents` is exhausted, for callers that learn it while producing them.
    If iterating `documents` raises, nothing is removed: the error propagates after the writes made so far."""
    embedder = _same_model(store, embedder, "ingest_documents")
    started = time.perf_counter()
    report = IngestReport()
    known = store.file_hashes()
    seen: set[str] = set()
    pending: list[tuple[Chunk, str]] = []
    for done, document in enumerate(documents, start=1):
        if progress:
            progress(document.source, done, 0)
        report.files_seen += 1
        if document.source in seen:
            report.warnings.append(f"{document.source}: listed twice, the second copy skipped")
            report.files_failed += 1
            continue
        seen.add(document.source)
        previous = known.get(document.source)
        if previous and previous == (document.agent, document.content_hash, root):
            report.files_unchanged += 1
            continue
        chunks = chunk_document(document)
        if previous:
            store.remove_source(document.source)
            report.files_updated += 1
            report.chunks_updated += len(chunks)
        else:
            report.files_added += 1
            report.chunks_added += len(chunks)
        pending.extend((chunk, root) for chunk in chunks)
        if len(pending) >= EMBED_BATCH:
            _write(store, embedder, pending)
            pending = []
    if pending:
        _write(store, embedder, pending)
    kept = set(keep() if callable(keep) else keep)
    for source, (_, _, stored_root) in sorted(known.items()):
        if stored_root == root and source not in seen and source not in kept:
            report.chunks_removed += store.remove_source(source)
            report.files_removed += 1
    sync_lexical = getattr(store, "sync_lexical", None)  # the BM25 side, where the store keeps one (as ingest())
    if sync_lexical is not None:
        sync_lexical()
    report.seconds = time.perf_counter() - started
    return report
