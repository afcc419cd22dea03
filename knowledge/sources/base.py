"""What every kind of source hands to the sync: items, one per upstream document, and one error for a source
that cannot be read at all.

A connector is a generator of items. It is given what the last good sync recorded about each document (its
`version`: an ETag, a page version, a blob SHA, an `updated_at`) so it can skip what did not change without
fetching it; the sync turns the items into store writes and decides what is removed (anything known before that
no item mentions). Keeping the decision "unchanged" in the connector is what lets a website answer 304 and a Git
tree compare SHAs, each in its own terms.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, Union


@dataclass(frozen=True, slots=True)
class SourceDocument:
    """One document read from a source, already converted to Markdown-like text.

    `key` is the document's identity inside its source (a page id, a URL, a path); `url` is where a person reads
    it, and becomes the document's `source` in the store, so citations point at it. `labels` and `path` feed the
    source's agent rules; `agent` is an explicit choice written in the document itself (front matter)."""

    key: str
    url: str
    title: str
    text: str
    version: Any
    labels: tuple[str, ...] = ()
    path: str = ""
    agent: str | None = None


@dataclass(frozen=True, slots=True)
class Unchanged:
    """A document known from the last sync that did not change (not fetched, or answered 304). `version` is its
    version now (a new ETag, a new sitemap date), or None to keep the recorded one."""

    key: str
    version: Any = None


@dataclass(frozen=True, slots=True)
class Failed:
    """A document that could not be read this time (5xx, timeout, unparsable): skipped and reported; what the
    store had from it is kept."""

    key: str
    reason: str


@dataclass(frozen=True, slots=True)
class Gone:
    """A document the source still lists but answers 404/410 for: removed like a deleted one, and reported."""

    key: str
    reason: str


@dataclass(frozen=True, slots=True)
class Planned:
    """How many documents the connector is about to go through, once it knows (for a progress bar)."""

    total: int


Item = Union[SourceDocument, Unchanged, Failed, Gone, Planned]


class SourceError(RuntimeError):
    """The source as a whole cannot be read (bad credentials, 5xx, timeout, a listing that makes no sense). The
    sync stops for this source, keeps every document it had, and tries again later. The message is one sentence
    for the operator; `status` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class SyncContext:
    """What a connector may know about the last good sync: each document's recorded version (empty for a full
    sync) and when that sync started (epoch seconds, None the first time)."""

    versions: Mapping[str, Any] = field(default_factory=dict)
    since: float | None = None


class Connector(Protocol):
    def items(self, context: SyncContext) -> Iterator[Item]:
        """Every document of the source, as items; raises `SourceError` when the source cannot be read."""


def http_problem(status: int, what: str, secret_hint: str = "") -> SourceError:
    """One sentence for a source-level HTTP failure, with the fix where there is an obvious one."""
    if status in (401, 403):
        fix = f"check {secret_hint}" if secret_hint else "check the credentials"
        return SourceError(f"{what} refused the credentials (HTTP {status}); {fix}", status)
    if status == 404:
        return SourceError(f"{what} was not found (HTTP 404); check the url and names in the sources file", status)
    if status == 429:
        return SourceError(f"{what} is rate limiting (HTTP 429) for longer than we wait; will retry later", status)
    return SourceError(f"{what} answered HTTP {status}; will retry later", status)
