"""What the knowledge base is missing, and how sessions end: the pure half of `switchboard gaps`.

A gap is a question the bot declined, one a user handed to a person, or one whose answer got 👎. Gaps are grouped
by topic by clustering their embeddings (`group`): each question joins the group whose centroid it is closest to
when that cosine similarity reaches `SAME_TOPIC` (0.5 with the local MiniLM model: rewordings of one question
score 0.55–0.8, different topics under 0.35), else it starts a group. Largest group first; each names its topic
by the question nearest its centroid and gives an example thread (one with a link when there is one).

Each session ends up in one outcome (`outcome_of`): `resolved` (a person resolved it), `handed_off` (a person is
asked or on it), `down` / `up` (its latest vote), `abandoned` (its last turn was declined, nobody was asked, and
nothing happened for `ABANDONED_AFTER_S`), else `answered`; `unanswered` is a declined last turn still within
that window.
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bots.support.store import HandoffRecord, SupportEvent

SAME_TOPIC = 0.5
ABANDONED_AFTER_S = 30 * 60
OUTCOMES = ("answered", "up", "down", "handed_off", "resolved", "abandoned", "unanswered")


@dataclass(frozen=True, slots=True)
class Gap:
    """One question the knowledge base did not serve: `kind` is declined, handoff or down (a 👎)."""

    kind: str
    question: str
    session_key: str
    platform: str
    at: float
    agent: str | None = None
    link: str = ""


@dataclass
class Topic:
    """A group of gaps about one thing."""

    name: str
    gaps: list[Gap] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.gaps)

    @property
    def kinds(self) -> dict[str, int]:
        return dict(Counter(g.kind for g in self.gaps))

    @property
    def example(self) -> Gap:
        """A thread to read: one with a link if any, else the latest."""
        linked = [g for g in self.gaps if g.link]
        return max(linked or self.gaps, key=lambda g: g.at)

    def to_dict(self) -> dict[str, Any]:
        example = self.example
        return {"topic": self.name, "count": self.count, "kinds": self.kinds,
                "example": {"session_key": example.session_key, "link": example.link, "question": example.question},
                "questions": [g.question for g in self.gaps]}


def parse_since(text: str | None, now: float | None = None) -> float | None:
    """`7d`, `12h`, `30m` (or a bare number of days) as the epoch time that long ago; None for none."""
    if not text:
        return None
    units = {"d": 86400, "h": 3600, "m": 60, "w": 7 * 86400}
    text = text.strip().lower()
    unit = units.get(text[-1], None)
    number = float(text[:-1] if unit else text)
    return (time.time() if now is None else now) - number * (unit or 86400)


def collect(events: Iterable[SupportEvent], votes: Iterable[Mapping[str, Any]],
            question_of: Mapping[str, str], *, since: float | None = None) -> list[Gap]:
    """The gaps among support events (declined turns, handoffs) and 👎 votes (their question from `question_of`,
    session key → the question the voted answer answered)."""
    gaps: list[Gap] = []
    for event in events:
        if since is not None and event.at < since:
            continue
        if event.kind in ("declined", "handoff") and event.text.strip():
            gaps.append(Gap(event.kind, event.text.strip(), event.session_key, event.platform, event.at, event.agent,
                            str(event.detail.get("link") or "")))
    for vote in votes:
        at = float(vote.get("at") or 0)
        key = str(vote.get("session_key") or "")
        if vote.get("vote") != "down" or (since is not None and at < since) or not question_of.get(key):
            continue
        gaps.append(Gap("down", question_of[key], key, str(vote.get("frontend") or ""), at))
    return gaps


def group(gaps: Sequence[Gap], embed: Callable[[Sequence[str]], np.ndarray], *,
          same_topic: float = SAME_TOPIC) -> list[Topic]:
    """Gaps grouped by topic (see the module docstring), largest group first."""
    if not gaps:
        return []
    vectors = np.asarray(embed([g.question for g in gaps]), dtype=np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
    members: list[list[int]] = []
    centroids: list[np.ndarray] = []
    for index, vector in enumerate(vectors):
        scores = [float(c @ vector) for c in centroids]
        best = int(np.argmax(scores)) if scores else -1
        if best >= 0 and scores[best] >= same_topic:
            members[best].append(index)
            centroid = vectors[members[best]].mean(axis=0)
            centroids[best] = centroid / max(float(np.linalg.norm(centroid)), 1e-9)
        else:
            members.append([index])
            centroids.append(vector)
    topics = []
    for indices, centroid in zip(members, centroids):
        nearest = max(indices, key=lambda i: float(vectors[i] @ centroid))
        topics.append(Topic(gaps[nearest].question, [gaps[i] for i in indices]))
    topics.sort(key=lambda t: (-t.count, -max(g.at for g in t.gaps)))
    return topics


def write_csv(topics: Sequence[Topic], path: Path) -> None:
    """One row per gap, with its topic and the topic's size, biggest topic first."""
    with Path(path).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["topic", "topic_count", "kind", "question", "session_key", "platform", "agent", "at",
                         "link"])
        for topic in topics:
            for gap in topic.gaps:
                writer.writerow([topic.name, topic.count, gap.kind, gap.question, gap.session_key, gap.platform,
                                 gap.agent or "", time.strftime("%Y-%m-%d %H:%M", time.gmtime(gap.at)), gap.link])


def outcome_of(events: Sequence[SupportEvent], handoff: HandoffRecord | None, votes: Sequence[Mapping[str, Any]],
               *, now: float | None = None, abandoned_after_s: float = ABANDONED_AFTER_S) -> str:
    """How one session ended (see the module docstring)."""
    now = time.time() if now is None else now
    if handoff is not None and handoff.status == "resolved":
        return "resolved"
    if handoff is not None and handoff.open:
        return "handed_off"
    latest_vote = max(votes, key=lambda v: float(v.get("at") or 0), default=None)
    if latest_vote is not None:
        return "up" if latest_vote.get("vote") == "up" else "down"
    turns = [e for e in events if e.kind in ("answered", "declined")]
    if turns and turns[-1].kind == "declined":
        last_activity = max(e.at for e in events)
        return "abandoned" if now - last_activity >= abandoned_after_s else "unanswered"
    return "answered"


def outcomes(events: Sequence[SupportEvent], handoffs: Sequence[HandoffRecord], votes: Sequence[Mapping[str, Any]],
             *, now: float | None = None, since: float | None = None) -> dict[str, str]:
    """Session key → outcome, for every session with a recorded turn, a handoff or a vote (since `since`)."""
    by_session: dict[str, list[SupportEvent]] = {}
    for event in sorted(events, key=lambda e: e.at):
        by_session.setdefault(event.session_key, []).append(event)
    records = {h.session_key: h for h in handoffs}
    votes_of: dict[str, list[Mapping[str, Any]]] = {}
    for vote in votes:
        votes_of.setdefault(str(vote.get("session_key")), []).append(vote)
    keys = set(by_session) | set(records) | set(votes_of)
    result = {}
    for key in sorted(keys):
        seen = by_session.get(key, [])
        last = max([e.at for e in seen] + ([records[key].updated_at] if key in records else [])
                   + [float(v.get("at") or 0) for v in votes_of.get(key, [])])
        if since is not None and last < since:
            continue
        result[key] = outcome_of(seen, records.get(key), votes_of.get(key, []), now=now)
    return result
