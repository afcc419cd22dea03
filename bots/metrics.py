"""Prometheus metrics shared by every front-end, exposed at `GET /metrics`.

One registry per process (not the global default), so tests can build several apps without clashes.
Front-ends record what they see; the web server only renders the registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "switchboard_requests_total", "HTTP requests served by the web server", ["method", "route", "status"],
    registry=REGISTRY,
)
REPLIES = Counter(
    "switchboard_replies_total", "Replies completed, by front-end and agent", ["frontend", "agent"], registry=REGISTRY
)
ERRORS = Counter(
    "switchboard_reply_errors_total", "Replies that ended in an error, by front-end and code", ["frontend", "code"],
    registry=REGISTRY,
)
FIRST_TOKEN = Histogram(
    "switchboard_first_token_seconds", "Time from a question to the first answer text visible to the user", ["frontend"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30), registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "switchboard_platform_429_total", "429 responses the bots received from a chat platform", ["platform"],
    registry=REGISTRY,
)

FEEDBACK = Counter(
    "switchboard_feedback_total", "👍/👎 clicks on answers, by front-end and vote", ["frontend", "vote"],
    registry=REGISTRY,
)

QUOTA_REFUSALS = Counter(
    "switchboard_quota_refusals_total", "Questions refused before the model was called: a daily quota reached "
    "(scope user, channel, workspace, ip) or the workspace turned off (disabled)", ["frontend", "scope"],
    registry=REGISTRY,
)


def record_refusal(frontend: str, scope: str) -> None:
    """Count one question refused by a quota or a disabled workspace (`bots.admission`, the web's per-IP quota)."""
    QUOTA_REFUSALS.labels(frontend, scope).inc()


def render() -> bytes:
    """The registry in Prometheus text format."""
    return generate_latest(REGISTRY)


def record_reply(frontend: str, *, status: str, agent: str | None, error_code: str | None,
                 first_token_s: float | None) -> None:
    """Count one finished reply, the same way on every front-end.

    `first_token_s` is question → first answer text *visible to the user* (on the platform, or written to the
    SSE stream); None when no text was ever shown.
    """
    if status == "done":
        REPLIES.labels(frontend, agent or "unknown").inc()
    else:
        ERRORS.labels(frontend, error_code or status).inc()
    if first_token_s is not None:
        FIRST_TOKEN.labels(frontend).observe(max(0.0, first_token_s))
