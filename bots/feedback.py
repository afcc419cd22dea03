"""👍/👎 on answers, recorded with the session key so a team can read the conversation that earned it.

Append-only JSON lines in the data directory (`feedback.jsonl`): no database to run, trivially shipped to
whatever analytics a team has, and safe under concurrent writers in one process (one short append each).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Literal

from bots.metrics import FEEDBACK

log = logging.getLogger(__name__)

Vote = Literal["up", "down"]
FEEDBACK_FILE = "feedback.jsonl"


def record_feedback(data_dir: Path, *, frontend: str, session_key: str, vote: Vote, user: str | None = None,
                    message: str | None = None) -> Path:
    """Append one vote to `data_dir/feedback.jsonl` and count it; returns the file written."""
    path = Path(data_dir) / FEEDBACK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    row = {"at": time.time(), "frontend": frontend, "session_key": session_key, "vote": vote, "user": user,
           "message": message}
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    FEEDBACK.labels(frontend=frontend, vote=vote).inc()
    log.info("feedback %s on session %s from %s", vote, session_key, user)
    return path


def read_feedback(data_dir: Path) -> list[dict]:
    """Every vote recorded so far, oldest first."""
    path = Path(data_dir) / FEEDBACK_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def summarize(rows: list[dict], recent: int = 10) -> dict:
    """Votes per front-end, and the latest 👎 with their session keys (the conversations worth reading)."""
    by_frontend: dict[str, dict[str, int]] = {}
    for row in rows:
        counts = by_frontend.setdefault(str(row.get("frontend")), {"up": 0, "down": 0})
        counts[row.get("vote", "down")] = counts.get(row.get("vote", "down"), 0) + 1
    downs = [row for row in rows if row.get("vote") == "down"][-recent:]
    return {"total": len(rows), "by_frontend": by_frontend,
            "recent_down": [{"at": r.get("at"), "session_key": r.get("session_key"), "user": r.get("user")}
                            for r in reversed(downs)]}
