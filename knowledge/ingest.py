"""Incremental, idempotent ingestion: unchanged files are skipped by content hash, changed files replace their
chunks, and files gone from an ingested folder lose theirs. Running it twice leaves the same store."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from knowledge.chunking import Chunk, chunk_document
from knowledge.loaders import UnreadableFile, discover, load_document
from knowledge.store import KnowledgeStore

EMBED_BATCH = 64
Progress = Callable[[str, int, int], None]  # (file being read, done, total)


@dataclass
class IngestReport:
    files_seen: int = 0
    files_added: int = 0
    files_updated: int = 0
    files_unchanged: int = 0
    files_removed: int = 0
    files_failed: int = 0
    chunks_added: int = 0
    chunks_updated: int = 0
    chunks_removed: int = 0
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def files_read(self) -> int:
        return self.files_added + self.files_updated + self.files_unchanged

    @property
    def chunks_written(self) -> int:
        return self.chunks_added + self.chunks_updated


def ingest(
    paths: list[Path],
    store: KnowledgeStore,
    *,
    rebuild: bool = False,
    progress: Progress | None = None,
) -> IngestReport:
    started = time.perf_counter()
    report = IngestReport()
    if rebuild:
        store.clear()
    known = store.file_hashes()
    files = discover(paths)
    roots = {p.resolve() for p in paths if p.is_dir()}
    seen_sources: set[str] = set()
    pending: list[tuple[Chunk, str]] = []

    for done, (file, root) in enumerate(files, start=1):
        if progress:
            progress(str(file), done, len(files))
        report.files_seen += 1
        try:
            document = load_document(file, root)
        except UnreadableFile as warning:
            report.warnings.append(str(warning))
            report.files_failed += 1
            continue
        except OSError as exc:
            report.warnings.append(f"{file}: cannot be read ({exc.strerror}), skipped")
            report.files_failed += 1
            continue
        if document is None:
            continue
        seen_sources.add(document.source)
        previous = known.get(document.source)
        if previous and previous[:2] == (document.agent, document.content_hash):
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
        pending.extend((chunk, str(root)) for chunk in chunks)
        if len(pending) >= EMBED_BATCH:
            _write(store, pending)
            pending = []
    if pending:
        _write(store, pending)

    # Files ingested earlier from one of these folders that are gone now lose their chunks.
    root_names = {str(root) for root in roots}
    for source in set(known) - seen_sources:
        agent, _, root = known[source]
        if root in root_names and not (Path(root) / source).exists():
            report.chunks_removed += store.remove_source(source)
            report.files_removed += 1
    report.seconds = time.perf_counter() - started
    return report


def _write(store: KnowledgeStore, pending: list[tuple[Chunk, str]]) -> None:
    chunks = [chunk for chunk, _ in pending]
    vectors = store.embedder.embed_documents([c.embed_text for c in chunks])
    store.add_chunks(chunks, vectors, roots=[root for _, root in pending])
