"""What each source's last sync left behind, persisted as one JSON file per source under the data directory.

Two things live here: the per-document bookkeeping that makes the next sync incremental (each document's
version and the store `source` it was filed under), and the status `switchboard sources` and `doctor` show (last
sync, document count, last error, consecutive failures, when it is next due). Files are replaced atomically, so a
crash mid-write leaves the previous state, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MAX_REPORTED = 20  # page-level problems kept for `switchboard sources` (the rest are counted)


@dataclass
class SourceState:
    name: str
    kind: str = ""
    fingerprint: str = ""
    # key → {"version": …, "source": store source (the URL), "hash": content hash}
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_attempt: float | None = None  # when the last sync started, good or not
    last_started: float | None = None  # when the last good sync started (what connectors compare edits with)
    last_success: float | None = None  # when the last good sync ended
    last_error: str | None = None  # the sentence of the last failed sync; None once a sync succeeds
    failures: int = 0  # consecutive failed syncs (drives the backoff)
    next_due: float | None = None
    skipped: list[str] = field(default_factory=list)  # documents skipped by the last sync, with why
    skipped_count: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # the last sync's summary (seen, added, …)
    documents: int = 0  # documents in the store from this source after the last good sync

    @property
    def failing(self) -> bool:
        return self.last_error is not None

    def versions(self) -> dict[str, Any]:
        return {key: item.get("version") for key, item in self.items.items()}


class StateStore:
    """One JSON file per source in `folder` (created on first save)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def load(self, name: str) -> SourceState:
        """The recorded state, or a fresh one when the source never synced (or its file is unreadable: the
        next sync is then a full one, which costs requests but loses nothing)."""
        try:
            data = json.loads(self._path(name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return SourceState(name)
        known = set(SourceState.__dataclass_fields__)
        return SourceState(**{k: v for k, v in data.items() if k in known})

    def failing(self) -> list[str]:
        """Names of the sources whose last sync failed (they keep their last good documents), sorted; read from
        the state files alone, so `/health` can say "degraded" without the sources file or any network."""
        if not self.folder.is_dir():
            return []
        names = (path.stem for path in self.folder.glob("*.json") if not path.name.startswith("."))
        return sorted(name for name in names if self.load(name).failing)

    def save(self, state: SourceState) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{state.name}.", suffix=".json", dir=self.folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(asdict(state), out, ensure_ascii=False, sort_keys=True)
            os.replace(tmp, self._path(state.name))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
