"""One sync of one source: read it through its connector, file its documents under their agents through the
ingestion pipeline, remove what vanished upstream, and record versions and status.

The rules that keep knowledge safe live here, once for every kind:
- a source that cannot be read (`SourceError`: bad credentials, 5xx, timeouts, a 429 longer than we wait)
  changes nothing in the store; it is marked failing and retried with backoff (1, 2, 4… minutes, at most its
  interval);
- a document that cannot be read keeps what the store had from it, and is reported;
- a source that suddenly lists nothing while it had documents is treated as failing, not as "delete all";
- only documents that the source no longer lists (or that answer 404/410) are removed.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knowledge.ingest import IngestReport, ingest, ingest_documents
from knowledge.loaders import Document
from knowledge.sources.base import (Connector, Failed, Gone, Planned, SourceDocument, SourceError, SyncContext,
                                    Unchanged)
from knowledge.sources.config import SourcesFileError, SourceSpec
from knowledge.sources.http import HttpPolicy
from knowledge.sources.state import MAX_REPORTED, SourceState, StateStore
from knowledge.store import KnowledgeStore

log = logging.getLogger(__name__)
FIRST_RETRY_S = 60.0
SyncProgress = Callable[[int, "int | None", str], None]  # (documents done, total when known, current one)


@dataclass
class SyncReport:
    """What one sync of one source did (the row of `switchboard sync`'s summary)."""

    name: str
    kind: str
    ok: bool = True
    error: str | None = None
    seen: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: int = 0
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def connector_for(spec: SourceSpec, policy: HttpPolicy, env: Mapping[str, str]) -> Connector:
    """The connector of the spec's kind (imported late: each pulls in its own client library)."""
    if spec.kind == "website":
        from knowledge.sources.website import WebsiteConnector

        return WebsiteConnector(spec, policy)
    if spec.kind == "confluence":
        from knowledge.sources.confluence import ConfluenceConnector

        return ConfluenceConnector(spec, policy, env)
    if spec.kind == "notion":
        from knowledge.sources.notion import NotionConnector

        return NotionConnector(spec, policy, env)
    if spec.kind == "github":
        from knowledge.sources.github import GitHubConnector

        return GitHubConnector(spec, policy, env)
    if spec.kind == "zendesk":
        from knowledge.sources.zendesk import ZendeskConnector

        return ZendeskConnector(spec, policy, env)
    raise SourcesFileError(f"source {spec.name!r}: kind {spec.kind!r} has no connector")


def retry_delay_s(failures: int, every_s: float) -> float:
    """Backoff after `failures` failed syncs in a row: 1, 2, 4… minutes, never longer than the interval."""
    return min(every_s, FIRST_RETRY_S * 2 ** max(0, failures - 1))


def content_hash(title: str, text: str) -> str:
    return hashlib.sha256(f"{title}\n{text}".encode()).hexdigest()


def sync_source(
    spec: SourceSpec,
    store: KnowledgeStore,
    states: StateStore,
    *,
    env: Mapping[str, str],
    policy: HttpPolicy | None = None,
    full: bool = False,
    clock: Callable[[], float] = time.time,
    progress: SyncProgress | None = None,
    connector: Connector | None = None,
) -> SyncReport:
    """Sync one source into `store` and record the outcome in `states`. Never raises for a source problem:
    the report says `ok=False` and why. `full` ignores the recorded versions (everything is read again; the
    content hash still spares unchanged documents their embedding)."""
    state = states.load(spec.name)
    started = clock()
    state.last_attempt = started
    state.kind = spec.kind
    try:
        if spec.kind == "folder":
            report, documents = _sync_folder(spec, store, progress)
            items = state.items
        else:
            report, items = _sync_items(spec, store, state, env, policy or HttpPolicy(), full, progress,
                                        connector)
            documents = len(items)
    except (SourceError, SourcesFileError) as exc:
        return _failed(spec, state, states, started, clock, str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug or a library surprise still must not lose knowledge
        log.exception("syncing source %s failed", spec.name)
        return _failed(spec, state, states, started, clock, f"{type(exc).__name__}: {exc}")
    state.items, state.documents, state.fingerprint = items, documents, spec.fingerprint
    state.last_started, state.last_success, state.last_error, state.failures = started, clock(), None, 0
    state.next_due = started + spec.every_s
    state.skipped, state.skipped_count = report.warnings[:MAX_REPORTED], len(report.warnings)
    state.counts = {k: getattr(report, k) for k in ("seen", "added", "updated", "unchanged", "removed", "failed")}
    states.save(state)
    report.seconds = clock() - started
    return report


def _failed(spec: SourceSpec, state: SourceState, states: StateStore, started: float,
            clock: Callable[[], float], error: str) -> SyncReport:
    state.last_error = error
    state.failures += 1
    state.next_due = started + retry_delay_s(state.failures, spec.every_s)
    states.save(state)
    log.warning("source %s: %s (keeping its %d documents; next try in %.0fs)", spec.name, error, state.documents,
                state.next_due - started)
    return SyncReport(spec.name, spec.kind, ok=False, error=error, seconds=clock() - started)


def _sync_folder(spec: SourceSpec, store: KnowledgeStore,
                 progress: SyncProgress | None) -> tuple[SyncReport, int]:
    """Today's `switchboard ingest` of one folder, as a source: agents from folders or front matter."""
    folder = Path(str(spec.option("path")))
    if not folder.is_dir():
        raise SourceError(f"the folder {folder} does not exist (or is not a folder); check path:")
    result = ingest([folder], store, progress=(lambda name, done, total: progress(done, total, name))
                    if progress else None)
    report = _from_ingest(spec, result, connector_unchanged=0, connector_failed=0, warnings=result.warnings)
    return report, result.files_read


def _sync_items(spec: SourceSpec, store: KnowledgeStore, state: SourceState, env: Mapping[str, str],
                policy: HttpPolicy, full: bool, progress: SyncProgress | None,
                connector: Connector | None) -> tuple[SyncReport, dict[str, dict[str, Any]]]:
    fresh = full or state.fingerprint != spec.fingerprint
    context = SyncContext({} if fresh else state.versions(), None if fresh else state.last_started)
    connector = connector or connector_for(spec, policy, env)
    items: dict[str, dict[str, Any]] = {}
    keep: set[str] = set()
    warnings: list[str] = []
    tally = {"unchanged": 0, "failed": 0, "listed": 0}
    agents = store.agents

    def documents() -> Iterator[Document]:
        total: int | None = None
        for item in connector.items(context):
            if isinstance(item, Planned):
                total = item.total
                continue
            tally["listed"] += 1
            if progress:
                progress(tally["listed"], total, getattr(item, "key", ""))
            known = state.items.get(item.key)
            if isinstance(item, Unchanged):
                if known:
                    items[item.key] = {**known, "version": known["version"] if item.version is None else item.version}
                    keep.add(known["source"])
                    tally["unchanged"] += 1
                continue
            if isinstance(item, (Failed, Gone)):
                warnings.append(f"{item.key}: {item.reason}" + (", skipped" if isinstance(item, Failed) else ", removed"))
                if isinstance(item, Failed):
                    tally["failed"] += 1
                    if known:  # the last good copy stays
                        items[item.key] = known
                        keep.add(known["source"])
                continue
            document = _document(spec, item, agents, warnings)
            if document is None:
                tally["failed"] += 1
                if known:
                    items[item.key] = known
                    keep.add(known["source"])
                continue
            items[item.key] = {"version": item.version, "source": document.source, "hash": document.content_hash}
            yield document
        if tally["listed"] == 0 and state.documents:
            raise SourceError(f"the source listed no documents at all, where it had {state.documents}; keeping "
                              "them (to empty it on purpose, remove it from the sources file and run `switchboard "
                              "sync`)")

    result = ingest_documents(documents(), store, root=spec.root, keep=lambda: keep)
    report = _from_ingest(spec, result, tally["unchanged"], tally["failed"], warnings + result.warnings)
    report.seen = tally["listed"]
    return report, items


def _document(spec: SourceSpec, item: SourceDocument, agents: Collection[str],
              warnings: list[str]) -> Document | None:
    agent = spec.agent_for(item.labels, item.path, item.agent, agents)
    if agent is None:
        warnings.append(f"{item.key}: no agent (labels {', '.join(item.labels) or 'none'}, path {item.path or '-'}); "
                        "add agent: or a rule in agent_by_label/agent_by_path, skipped")
        return None
    if not item.text.strip():
        warnings.append(f"{item.key}: no text, skipped")
        return None
    return Document(source=item.url, title=item.title, agent=agent, text=item.text.strip(),
                    content_hash=content_hash(item.title, item.text.strip()),
                    meta={"source_name": spec.name})


def _from_ingest(spec: SourceSpec, result: IngestReport, connector_unchanged: int, connector_failed: int,
                 warnings: list[str]) -> SyncReport:
    return SyncReport(
        spec.name, spec.kind, seen=result.files_seen, added=result.files_added, updated=result.files_updated,
        unchanged=connector_unchanged + result.files_unchanged, removed=result.files_removed,
        failed=connector_failed + result.files_failed, warnings=warnings,
    )


def prune_removed_sources(store: KnowledgeStore, names: Collection[str]) -> int:
    """Remove the chunks of sources no longer in the sources file (their `source:<name>` root); the count of
    documents removed. Only syncing every source calls this, so a typo'd `sync NAME` never empties anything."""
    removed = 0
    for source, (_, _, root) in store.file_hashes().items():
        if root.startswith("source:") and root[len("source:"):] not in names:
            store.remove_source(source)
            removed += 1
    return removed


def is_due(state: SourceState, now: float) -> bool:
    return state.next_due is None or state.next_due <= now
